"""sts-bridge inside other tools: fsspec (``filesystem``), GDAL (``gdal``), boto3, credential
formats, a ``credentials --serve`` child (``child_env``, ``delegated``). Imports: client, below."""
