"""The local platform of sts-bridge: an OpenID Certified identity provider
(panva's oidc-provider), the reference TerrAPI server and Ceph radosgw with
real STS, all on loopback. The SDK (``sts_bridge``) never imports this package.
"""
