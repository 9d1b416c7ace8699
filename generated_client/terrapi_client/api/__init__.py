# flake8: noqa

# import apis into api package
from terrapi_client.api.storage_api import StorageApi
from terrapi_client.api.user_api import UserApi

