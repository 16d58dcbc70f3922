#!/bin/sh
# One-shot job of the compose stack (minio/mc image): create the lake bucket and the app's MinIO user,
# whose policy allows that bucket only. Runs on every `docker compose up`: idempotent, fails loudly.
set -eu

: "${MINIO_URL:?}" "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}" "${LAKE_BUCKET:?}"
: "${S3_ACCESS_KEY_ID:?}" "${S3_SECRET_ACCESS_KEY:?}"

# The app must not run with the root credentials: a leaked app key then exposes one bucket, not the server.
if [ "$S3_ACCESS_KEY_ID" = "$MINIO_ROOT_USER" ]; then
  echo "minio-init: S3_ACCESS_KEY_ID must differ from MINIO_ROOT_USER (the app gets its own user)" >&2
  exit 1
fi

# mc keeps its alias config under $HOME; the image's default home may be read-only.
export MC_CONFIG_DIR=/tmp/.mc
mc alias set costlake "$MINIO_URL" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null

mc mb --ignore-existing "costlake/$LAKE_BUCKET"

policy=/tmp/costlake-lake-policy.json
cat >"$policy" <<JSON
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
      "Resource": ["arn:aws:s3:::$LAKE_BUCKET"]
    },
    {
      "Effect": "Allow",
      "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
                 "s3:ListMultipartUploadParts"],
      "Resource": ["arn:aws:s3:::$LAKE_BUCKET/*"]
    }
  ]
}
JSON
# `policy create` replaces an existing policy of that name, so a changed bucket name is picked up.
mc admin policy create costlake costlake-lake "$policy"
# `user add` on an existing user sets its secret: rotating S3_SECRET_ACCESS_KEY is a restart of this job.
mc admin user add costlake "$S3_ACCESS_KEY_ID" "$S3_SECRET_ACCESS_KEY"
# Attaching an already attached policy is reported as an error by mc; only a missing attachment is one.
if ! mc admin policy attach costlake costlake-lake --user "$S3_ACCESS_KEY_ID" 2>/dev/null; then
  mc admin user info costlake "$S3_ACCESS_KEY_ID" | grep -q "costlake-lake" || {
    echo "minio-init: could not attach policy costlake-lake to $S3_ACCESS_KEY_ID" >&2
    exit 1
  }
fi
echo "minio-init: bucket $LAKE_BUCKET and user $S3_ACCESS_KEY_ID ready"
