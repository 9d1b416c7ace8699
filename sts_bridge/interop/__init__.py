"""sts-bridge inside other tools: fsspec (``filesystem``), GDAL (``gdal``), boto3,
credential formats, the environment of a ``credentials --serve`` child (``child_env``,
``delegated``)."""
