"""Refreshing S3 credentials and where a workspace's credentials come from (``sources``)."""
