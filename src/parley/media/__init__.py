"""Blob stores for uploaded files: bytes kept by their SHA-256 (content-addressed).

``files`` keeps them under the data directory (the embedded default); ``s3`` in an
S3-compatible bucket (``PARLEY_MEDIA_URL=s3://bucket/prefix``). Media *records* (who
uploaded what) live in the database, through the storage port (``storage.media_port``).
"""
