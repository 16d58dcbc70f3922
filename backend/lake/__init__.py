"""The lake: every Delta table read and write goes through `Lake` (delta-rs), on a local folder or S3/MinIO."""

from backend.lake.delta import Lake, lake_from_settings
from backend.lake.storage import LakeLocation, lake_location

__all__ = ["Lake", "LakeLocation", "lake_from_settings", "lake_location"]
