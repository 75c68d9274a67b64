"""Drive a weft node's S3 gateway with real clients: boto3 and the aws CLI.

Environment: WEFT_S3 (http://host:port), WEFT_KEY/WEFT_SECRET (read+write key),
WEFT_RO_KEY/WEFT_RO_SECRET (read-only key for bucket "photos"), WEFT_BIG_MIB (size of the
multipart round trip through the aws CLI), WORK (a scratch directory).
Exits non-zero (an AssertionError or an exception) on the first failure.
"""

import hashlib
import http.client
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import boto3
import botocore
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

ENDPOINT = os.environ["WEFT_S3"]
KEY, SECRET = os.environ["WEFT_KEY"], os.environ["WEFT_SECRET"]
WORK = os.environ["WORK"]


def client(key=KEY, secret=SECRET, **cfg):
    return boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **cfg),
    )


def fails_with(code, status, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except botocore.exceptions.ClientError as e:
        got = (e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"])
        assert got[1] == status and (code is None or got[0] == code), f"expected {code} {status}, got {got}"
        return
    raise AssertionError(f"expected {code} {status}, but it succeeded")


def step(name):
    print(f"-- {name}", flush=True)


s3 = client()

step("buckets: create (with weft residency and coding headers), list, head, errors")


def weft_headers(request, **_):
    request.headers["x-weft-ec"] = "2+1"
    request.headers["x-weft-versions"] = "2"


s3.meta.events.register("before-sign.s3.CreateBucket", weft_headers)
s3.create_bucket(Bucket="photos")
s3.meta.events.unregister("before-sign.s3.CreateBucket", weft_headers)
s3.create_bucket(Bucket="scratch")
fails_with("BucketAlreadyOwnedByYou", 409, s3.create_bucket, Bucket="photos")
fails_with("InvalidBucketName", 400, s3.create_bucket, Bucket="No_Such")
names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
assert {"photos", "scratch"} <= set(names), names
s3.head_bucket(Bucket="photos")
fails_with(None, 404, s3.head_bucket, Bucket="missing-bucket")
fails_with("NoSuchBucket", 404, s3.put_object, Bucket="missing-bucket", Key="k", Body=b"x")

step("objects: put with metadata and content type, get, head, ranges, ETag = MD5")
body = os.urandom(300_000)
put = s3.put_object(
    Bucket="photos", Key="a/cat.jpg", Body=body, ContentType="image/jpeg", Metadata={"Camera": "x100"}
)
assert put["ETag"] == '"%s"' % hashlib.md5(body).hexdigest(), put["ETag"]
got = s3.get_object(Bucket="photos", Key="a/cat.jpg")
assert got["Body"].read() == body
assert got["ContentType"] == "image/jpeg" and got["Metadata"] == {"camera": "x100"}, got
head = s3.head_object(Bucket="photos", Key="a/cat.jpg")
assert head["ContentLength"] == len(body) and head["ETag"] == put["ETag"]
part = s3.get_object(Bucket="photos", Key="a/cat.jpg", Range="bytes=1000-1999")
assert part["ResponseMetadata"]["HTTPStatusCode"] == 206
assert part["ContentRange"] == f"bytes 1000-1999/{len(body)}"
assert part["Body"].read() == body[1000:2000]
tail = s3.get_object(Bucket="photos", Key="a/cat.jpg", Range="bytes=-10")["Body"].read()
assert tail == body[-10:]
fails_with("InvalidRange", 416, s3.get_object, Bucket="photos", Key="a/cat.jpg", Range="bytes=999999-")
fails_with("NoSuchKey", 404, s3.get_object, Bucket="photos", Key="nope")
fails_with(None, 404, s3.head_object, Bucket="photos", Key="nope")
s3.put_object(Bucket="photos", Key="empty", Body=b"")
assert s3.get_object(Bucket="photos", Key="empty")["Body"].read() == b""
# A Content-MD5 that does not match what arrived is refused, and nothing is stored.
fails_with(
    "BadDigest", 400, s3.put_object, Bucket="photos", Key="bad-md5", Body=b"abc",
    ContentMD5="AAAAAAAAAAAAAAAAAAAAAA==",
)
fails_with("NoSuchKey", 404, s3.get_object, Bucket="photos", Key="bad-md5")

step("versions: the bucket keeps 2; GetObject by VersionId")
v1 = s3.put_object(Bucket="photos", Key="doc", Body=b"one")
v2 = s3.put_object(Bucket="photos", Key="doc", Body=b"two")
assert s3.get_object(Bucket="photos", Key="doc")["Body"].read() == b"two"
assert v1["VersionId"] != v2["VersionId"]
assert s3.get_object(Bucket="photos", Key="doc", VersionId=v1["VersionId"])["Body"].read() == b"one"
assert s3.head_object(Bucket="photos", Key="doc")["VersionId"] == v2["VersionId"]
fails_with("NoSuchVersion", 404, s3.get_object, Bucket="photos", Key="doc", VersionId="0000000000000-00000000")

step("copy: COPY keeps metadata, REPLACE sets new metadata; shards are shared, not copied")
s3.copy_object(Bucket="scratch", Key="copied.jpg", CopySource={"Bucket": "photos", "Key": "a/cat.jpg"})
c = s3.get_object(Bucket="scratch", Key="copied.jpg")
assert c["Body"].read() == body and c["Metadata"] == {"camera": "x100"} and c["ETag"] == put["ETag"]
s3.copy_object(
    Bucket="scratch", Key="replaced.jpg", CopySource="photos/a/cat.jpg",
    MetadataDirective="REPLACE", Metadata={"k": "v"}, ContentType="text/plain",
)
r = s3.head_object(Bucket="scratch", Key="replaced.jpg")
assert r["Metadata"] == {"k": "v"} and r["ContentType"] == "text/plain", r

step("listing: prefixes, delimiters, pagination (v2 and v1)")
for k in ["list/a/1", "list/a/2", "list/b", "list/c/x/1", "list/c/y", "list/d", "list/sp ace+plus"]:
    s3.put_object(Bucket="scratch", Key=k, Body=k.encode())
top = s3.list_objects_v2(Bucket="scratch", Prefix="list/", Delimiter="/")
assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["list/a/", "list/c/"], top
assert [o["Key"] for o in top["Contents"]] == ["list/b", "list/d", "list/sp ace+plus"], top
seen, token = [], None
while True:
    kw = {"ContinuationToken": token} if token else {}
    page = s3.list_objects_v2(Bucket="scratch", Prefix="list/", MaxKeys=2, **kw)
    assert page["KeyCount"] <= 2
    seen += [o["Key"] for o in page.get("Contents", [])]
    if not page["IsTruncated"]:
        break
    token = page["NextContinuationToken"]
assert seen == sorted(k for k in seen) and len(seen) == 7, seen
paginator = s3.get_paginator("list_objects")
v1_keys = [o["Key"] for p in paginator.paginate(Bucket="scratch", Prefix="list/", PaginationConfig={"PageSize": 3}) for o in p.get("Contents", [])]
assert v1_keys == seen, v1_keys
after = s3.list_objects_v2(Bucket="scratch", Prefix="list/", StartAfter="list/c/y")
assert [o["Key"] for o in after["Contents"]] == ["list/d", "list/sp ace+plus"], after

step("deletes: one, many, and a bucket only when empty")
s3.delete_object(Bucket="scratch", Key="list/d")
s3.delete_object(Bucket="scratch", Key="never-existed")
out = s3.delete_objects(Bucket="scratch", Delete={"Objects": [{"Key": "list/a/1"}, {"Key": "list/a/2"}]})
assert sorted(d["Key"] for d in out["Deleted"]) == ["list/a/1", "list/a/2"], out
left = [o["Key"] for o in s3.list_objects_v2(Bucket="scratch", Prefix="list/")["Contents"]]
assert left == ["list/b", "list/c/x/1", "list/c/y", "list/sp ace+plus"], left
fails_with("BucketNotEmpty", 409, s3.delete_bucket, Bucket="scratch")
keys = [o["Key"] for o in s3.list_objects_v2(Bucket="scratch")["Contents"]]
s3.delete_objects(Bucket="scratch", Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True})
s3.delete_bucket(Bucket="scratch")
fails_with(None, 404, s3.head_bucket, Bucket="scratch")

step("multipart: create, upload parts, list parts and uploads, complete, abort")
MiB = 1 << 20
parts_data = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(MiB + 7)]
up = s3.create_multipart_upload(Bucket="photos", Key="big/video.bin", ContentType="video/mp4", Metadata={"a": "b"})
uid = up["UploadId"]
etags = []
for i, data in enumerate(parts_data, start=1):
    etags.append(s3.upload_part(Bucket="photos", Key="big/video.bin", UploadId=uid, PartNumber=i, Body=data)["ETag"])
listed = s3.list_parts(Bucket="photos", Key="big/video.bin", UploadId=uid)
assert [p["PartNumber"] for p in listed["Parts"]] == [1, 2, 3]
assert [p["Size"] for p in listed["Parts"]] == [len(d) for d in parts_data]
uploads = s3.list_multipart_uploads(Bucket="photos")["Uploads"]
assert any(u["UploadId"] == uid and u["Key"] == "big/video.bin" for u in uploads), uploads
fails_with(
    "InvalidPart", 400, s3.complete_multipart_upload, Bucket="photos", Key="big/video.bin", UploadId=uid,
    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"0000"'}]},
)
fails_with(
    "InvalidPartOrder", 400, s3.complete_multipart_upload, Bucket="photos", Key="big/video.bin", UploadId=uid,
    MultipartUpload={"Parts": [{"PartNumber": 2, "ETag": etags[1]}, {"PartNumber": 1, "ETag": etags[0]}]},
)
done = s3.complete_multipart_upload(
    Bucket="photos", Key="big/video.bin", UploadId=uid,
    MultipartUpload={"Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]},
)
expected = hashlib.md5(b"".join(hashlib.md5(d).digest() for d in parts_data)).hexdigest() + "-3"
assert done["ETag"] == '"%s"' % expected, (done["ETag"], expected)
whole = b"".join(parts_data)
got = s3.get_object(Bucket="photos", Key="big/video.bin")
assert got["Body"].read() == whole and got["ContentType"] == "video/mp4" and got["Metadata"] == {"a": "b"}
# A range across the boundary between parts 1 and 2.
cross = s3.get_object(Bucket="photos", Key="big/video.bin", Range=f"bytes={5 * MiB - 10}-{5 * MiB + 9}")
assert cross["Body"].read() == whole[5 * MiB - 10 : 5 * MiB + 10]
fails_with("NoSuchUpload", 404, s3.list_parts, Bucket="photos", Key="big/video.bin", UploadId=uid)
small = s3.create_multipart_upload(Bucket="photos", Key="small")["UploadId"]
e1 = s3.upload_part(Bucket="photos", Key="small", UploadId=small, PartNumber=1, Body=b"tiny")["ETag"]
e2 = s3.upload_part(Bucket="photos", Key="small", UploadId=small, PartNumber=2, Body=b"tiny")["ETag"]
fails_with(
    "EntityTooSmall", 400, s3.complete_multipart_upload, Bucket="photos", Key="small", UploadId=small,
    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]},
)
s3.abort_multipart_upload(Bucket="photos", Key="small", UploadId=small)
fails_with("NoSuchUpload", 404, s3.abort_multipart_upload, Bucket="photos", Key="small", UploadId=small)

step("presigned URLs: a plain HTTP client can GET and PUT; a tampered one is refused")
url = s3.generate_presigned_url("get_object", Params={"Bucket": "photos", "Key": "a/cat.jpg"}, ExpiresIn=300)
assert urllib.request.urlopen(url).read() == body
# SigV4 query signing, PUT through a bare HTTP client (no Content-Type: none was signed).
v4 = client(signature_version="s3v4")
put_url = urllib.parse.urlparse(
    v4.generate_presigned_url("put_object", Params={"Bucket": "photos", "Key": "via-url"}, ExpiresIn=300)
)
assert "X-Amz-Signature=" in put_url.query, put_url
pc = http.client.HTTPConnection(put_url.hostname, put_url.port)
pc.request("PUT", f"{put_url.path}?{put_url.query}", body=b"presigned!")
presp = pc.getresponse()
assert presp.status == 200, (presp.status, presp.read())
assert s3.get_object(Bucket="photos", Key="via-url")["Body"].read() == b"presigned!"
for bad in [url.replace("Signature=", "Signature=0"), url.replace("a%2Fcat.jpg", "via-url").replace("a/cat.jpg", "via-url")]:
    try:
        urllib.request.urlopen(bad)
        raise AssertionError("a tampered presigned URL was accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 403, e.code

step("authentication: unsigned, unknown key and wrong secret get 403")
try:
    urllib.request.urlopen(f"{ENDPOINT}/photos/a/cat.jpg")
    raise AssertionError("an unsigned request was accepted")
except urllib.error.HTTPError as e:
    assert e.code == 403, e.code
fails_with("InvalidAccessKeyId", 403, client(key="WKNOSUCHKEY0000000000").list_buckets)
fails_with("SignatureDoesNotMatch", 403, client(secret="x" * 40).list_buckets)

step("scoped keys: read-only on photos")
ro = client(os.environ["WEFT_RO_KEY"], os.environ["WEFT_RO_SECRET"])
assert ro.get_object(Bucket="photos", Key="a/cat.jpg")["Body"].read() == body
fails_with("AccessDenied", 403, ro.put_object, Bucket="photos", Key="x", Body=b"x")
fails_with("AccessDenied", 403, ro.create_bucket, Bucket="other-bucket")
fails_with("AccessDenied", 403, ro.delete_object, Bucket="photos", Key="a/cat.jpg")

step("virtual-host style: Host: photos.localhost")
host = urllib.parse.urlparse(ENDPOINT)
vreq = AWSRequest(method="GET", url=f"http://photos.localhost:{host.port}/a/cat.jpg", headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
SigV4Auth(Credentials(KEY, SECRET), "s3", "us-east-1").add_auth(vreq)
conn = http.client.HTTPConnection(host.hostname, host.port)
conn.request("GET", "/a/cat.jpg", headers={**dict(vreq.headers), "Host": f"photos.localhost:{host.port}"})
resp = conn.getresponse()
assert resp.status == 200 and resp.read() == body, resp.status

step("aws CLI: mb, cp (multipart) up and down, ls, rm")
big_mib = int(os.environ.get("WEFT_BIG_MIB", "1024"))
src = os.path.join(WORK, "big.bin")
chunk = os.urandom(MiB)
digest = hashlib.sha256()
with open(src, "wb") as f:
    for i in range(big_mib):
        block = bytes([i % 251]) + chunk[1:]
        f.write(block)
        digest.update(block)
env = dict(
    os.environ, AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION="us-east-1",
    AWS_ENDPOINT_URL=ENDPOINT,
)
aws = [os.path.join(os.path.dirname(sys.executable), "aws"), "--endpoint-url", ENDPOINT]


def run(*args):
    out = subprocess.run(aws + list(args), env=env, capture_output=True, text=True)
    assert out.returncode == 0, f"aws {args}: {out.stdout}{out.stderr}"
    return out.stdout


run("s3", "mb", "s3://cli-bucket")
run("s3", "cp", "--only-show-errors", src, "s3://cli-bucket/big.bin")
assert "big.bin" in run("s3", "ls", "s3://cli-bucket/")
dst = os.path.join(WORK, "big.back")
run("s3", "cp", "--only-show-errors", "s3://cli-bucket/big.bin", dst)
back = hashlib.sha256()
with open(dst, "rb") as f:
    while block := f.read(MiB):
        back.update(block)
assert back.hexdigest() == digest.hexdigest(), "the big object did not round-trip"
assert os.path.getsize(dst) == big_mib * MiB
os.remove(src)
os.remove(dst)
run("s3", "rm", "s3://cli-bucket/big.bin")
run("s3", "rb", "s3://cli-bucket")
print(f"ok: every S3 check passed ({big_mib} MiB multipart round trip through the aws CLI)")
