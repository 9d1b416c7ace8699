"""sts-bridge inside other tools: fsspec (``filesystem``), boto3, credential formats."""
