"""The S3 side of sts-bridge: signing, transfers, listing, sync (never imports the API)."""
