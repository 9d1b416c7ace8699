"""The TerrAPI adapter: API client, storage point. Imports: auth/, config, errors, base."""
