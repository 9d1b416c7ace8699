"""Seed notebook 001 ("Discover and access client app workspaces") against the
local platform.

The code cells below are the notebook's, changed only where the task allows:
the import name (``openapi_client`` -> ``terrapi_client``) and the URLs (plus
the client id and secret, which are the platform's configuration like the
URLs). The notebook text is truncated after ``list_objects_v2``; the last cell
does what its introduction announces (upload a file, get a signed URL and
fetch it) in the same style. ``IPython`` is not a dependency of this project,
so its unused ``JSON`` import gets a stub module.
"""

# ruff: noqa: E501, W291, W293  (the cells keep the notebook text as it is)
from __future__ import annotations

import sys
import types
from typing import Any

import pytest
from sts_bridge_devstack.platform import LocalPlatform

pytestmark = pytest.mark.integration

CELL_SETUP = """
#################################################
# First Let's set up the environment
iam_url = ISSUER_URL
terrapi_url = TERRAPI_URL
platform_scopes = ['gep']  # list of platform scopes. See https://api.bios-dev.terradue.com/core/docs/platforms/ for more information

# Set localdev to True if you are running the notebook to services running on your local machine (self-signed certificates)
localdev = False
#################################################

import sys, os
import pprint
sys.path.append('../')
import terrapi_client
from terrapi_client.rest import ApiException

configuration = terrapi_client.Configuration(
    host = terrapi_url
)
configuration.verify_ssl = not(localdev)
"""

CELL_AUTH = """
from IPython.display import JSON
from authlib.jose import jwt
import requests


pp = pprint.PrettyPrinter(indent=4, width=80, compact=True)

# First request an access token from keycloak using the client credentials flow
# and use the access token to create an authenticated client
# the client will automatically refresh the token when it expires

from authlib.oidc.discovery import well_known, OpenIDProviderMetadata
t2_oidc_dicovery_url = well_known.get_well_known_url(iam_url, external=True)
t2_oidc_dicovery = OpenIDProviderMetadata(requests.get(t2_oidc_dicovery_url, verify=not(localdev)).json())

# We will use the public client of Terradue IAM
client_id = CLIENT_ID
client_secret = CLIENT_SECRET
# Scopes requested (the platform related scopes must be set accordingly)
scopes = 'openid email profile offline_access' + ' '.join([' {}'.format(s) for s in platform_scopes])

# using requests implementation
from authlib.integrations.requests_client import OAuth2Session
from authlib.common.security import generate_token
client = OAuth2Session(client_id, client_secret, scope=scopes)
redirect_uri='http://localhost:8888/terrapi/'

authorization_endpoint = t2_oidc_dicovery['authorization_endpoint']
token_endpoint = t2_oidc_dicovery['token_endpoint']
token = client.fetch_token(token_endpoint, grant_type='client_credentials')
os.environ['ACCESS_TOKEN'] = token['access_token']
os.environ['REFRESH_TOKEN'] = token['refresh_token']
pp.pprint(token)
"""

CELL_USER = """
configuration.access_token = os.environ["ACCESS_TOKEN"]
# Enter a context with an instance of the API client
with terrapi_client.ApiClient(configuration) as api_client:
    # Create an instance of the API class
    api_instance = terrapi_client.UserApi(api_client)
    job_id = 'job_id_example' # str | 

    try:
        # Get the user information
        userinfo = api_instance.v2_user_info_get()
        print("The response of UserAPI:\\n")
        pp.pprint(userinfo)
    except ApiException as e:
        print("Exception when calling UserAPI: %s\\n" % e)
"""

CELL_WORKSPACES = """
configuration.access_token = os.environ["ACCESS_TOKEN"]
# Enter a context with an instance of the API client
with terrapi_client.ApiClient(configuration) as api_client:
    # Create an instance of the API class
    api_instance = terrapi_client.StorageApi(api_client)

    try:
        # Get the storage information
        workspaces = api_instance.get_workspaces()
    except ApiException as e:
        print("Exception when calling StorageApi: %s\\n" % e)


# We select the service workspace of the current platform
# Usually the default workspace is the one with the naming convention <platform>-<username>-private-workspace
workspace = next(filter(lambda x:x.name == 'gep-processing-results-a2s-service-workspace',workspaces))

pp.pprint(workspace)

workspce_info = api_instance.get_workspace_by_id(workspace.name)
                                           
pp.pprint(workspce_info)
"""

CELL_STS = """
configuration.access_token = os.environ["ACCESS_TOKEN"]
# Enter a context with an instance of the API client
with terrapi_client.ApiClient(configuration) as api_client:
    # Create an instance of the API class
    api_instance = terrapi_client.StorageApi(api_client)

    try:
        # Request a security token to access the workspace
        token = api_instance.get_storage_sts(workspace.name)
    except ApiException as e:
        print("Exception when calling StorageApi: %s\\n" % e)
        
pp.pprint(token)
"""

CELL_S3 = """
import boto3
import boto3.session

## Create a S3 session with the service URL and the security token
session = boto3.session.Session(aws_access_key_id=token.credentials.access_key, 
                                aws_secret_access_key=token.credentials.secret_key, 
                                aws_session_token=token.credentials.token,
                                region_name=token.storage.properties.__contains__('region') and token.storage.properties['region'][0] or 'us-east-1')

## Create a S3 client with the service URL and the security token
s3 = session.client('s3', endpoint_url=token.storage.properties['service_url'][0], verify=not(localdev))

pp.pprint(token.storage.service_uri)
pp.pprint(token.storage.properties)
pp.pprint(token.credentials.token)

## List the content of the workspace
response = s3.list_objects_v2(Bucket=token.storage.properties['bucket'][0], Prefix=token.storage.properties['key'][0])
pp.pprint(response)
"""

# (after the truncation point) upload a file, get a signed URL, fetch it
CELL_UPLOAD_AND_SIGN = """
## Upload a file to the workspace
key = token.storage.properties['key'][0] + 'notebook/hello.txt'
s3.put_object(Bucket=token.storage.properties['bucket'][0], Key=key, Body=b'Hello from the notebook')

## Get a download link for the file (signed url)
url = s3.generate_presigned_url('get_object', Params={'Bucket': token.storage.properties['bucket'][0], 'Key': key}, ExpiresIn=300)
pp.pprint(url)
download = requests.get(url, verify=not(localdev))
pp.pprint(download.status_code)
"""

CELLS = [CELL_SETUP, CELL_AUTH, CELL_USER, CELL_WORKSPACES, CELL_STS, CELL_S3, CELL_UPLOAD_AND_SIGN]


@pytest.fixture
def ipython_stub(monkeypatch: pytest.MonkeyPatch) -> None:
    if "IPython" in sys.modules:
        return
    ipython = types.ModuleType("IPython")
    display = types.ModuleType("IPython.display")
    display.JSON = lambda *a, **k: None  # type: ignore[attr-defined]
    ipython.display = display  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display)


@pytest.mark.requires_radosgw("fetches a presigned URL")
def test_seed_notebook_runs_against_the_local_platform(
    local_platform: LocalPlatform,
    ipython_stub: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("ACCESS_TOKEN", raising=False)
    monkeypatch.delenv("REFRESH_TOKEN", raising=False)
    ns: dict[str, Any] = {
        "__name__": "__notebook__",
        "ISSUER_URL": local_platform.issuer,
        "TERRAPI_URL": local_platform.api_url,
        "CLIENT_ID": local_platform.service_client_id,
        "CLIENT_SECRET": local_platform.service_client_secret,
    }
    # the notebook writes ACCESS_TOKEN / REFRESH_TOKEN into os.environ
    monkeypatch.setenv("ACCESS_TOKEN", "")
    monkeypatch.setenv("REFRESH_TOKEN", "")
    for number, cell in enumerate(CELLS):
        exec(compile(cell, f"<seed cell {number}>", "exec"), ns)  # noqa: S102
    out = capsys.readouterr().out
    assert "Exception when calling" not in out

    userinfo = ns["userinfo"]
    assert userinfo.name == "service-account-" + local_platform.service_client_id
    assert ns["workspace"].name == "gep-processing-results-a2s-service-workspace"
    info = ns["workspce_info"]
    assert info.properties["bucket"] == ["gep-processing-results"]
    assert info.properties["key"] == ["a2s/"]
    token = ns["token"]
    assert token.credentials.use_token is True
    assert token.storage.properties["storage_url"] == ["s3://gep-processing-results/a2s/"]
    assert ns["response"]["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert ns["download"].status_code == 200
    assert ns["download"].content == b"Hello from the notebook"
