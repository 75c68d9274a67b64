"""Time boto3 against an S3 endpoint, as `weft bench wan` does on loopback.

Usage: boto3-bench.py ENDPOINT ACCESS_KEY SECRET BUCKET RUNS BIG_MIB

RUNS 4 KiB PutObjects, then a GetObject of each (after one untimed warm-up of each), then a
BIG_MIB MiB object put once and read with GetObject three times. Prints one JSON line:
{"put_ms": [...], "get_ms": [...], "big_get_mbs": [...]}. Every byte read back is checked.
"""

import json
import os
import sys
import time

import boto3
from botocore.config import Config


def main():
    endpoint, key, secret, bucket, runs, big_mib = sys.argv[1:7]
    runs, big_mib = int(runs), int(big_mib)
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    body = os.urandom(4096)
    s3.put_object(Bucket=bucket, Key="boto3-warm", Body=body)
    s3.get_object(Bucket=bucket, Key="boto3-warm")["Body"].read()
    puts, gets = [], []
    # Two phases, as S3 benchmarks run them: every put, then every get.
    for i in range(runs):
        t = time.perf_counter()
        s3.put_object(Bucket=bucket, Key=f"boto3-{i}", Body=body)
        puts.append((time.perf_counter() - t) * 1000)
    for i in range(runs):
        t = time.perf_counter()
        back = s3.get_object(Bucket=bucket, Key=f"boto3-{i}")["Body"].read()
        gets.append((time.perf_counter() - t) * 1000)
        if back != body:
            sys.exit(f"boto3-bench: boto3-{i} read back other bytes")
    big = os.urandom(big_mib << 20)
    s3.put_object(Bucket=bucket, Key="boto3-big", Body=big)
    rates = []
    for _ in range(3):
        t = time.perf_counter()
        back = s3.get_object(Bucket=bucket, Key="boto3-big")["Body"].read()
        rates.append(len(big) / (time.perf_counter() - t) / 1e6)
        if back != big:
            sys.exit("boto3-bench: the big object read back other bytes")
    print(json.dumps({"put_ms": puts, "get_ms": gets, "big_get_mbs": rates}))


if __name__ == "__main__":
    main()
