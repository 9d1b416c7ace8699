"""Our S3 engine: signer, signed HTTP, transfers, object keys. Imports: config, errors, base."""
