"""Refreshing S3 credentials, STS fetcher, cache, workspace sources. Imports: terrapi/ and below."""
