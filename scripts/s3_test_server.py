#!/usr/bin/env python3
"""The S3 server of the media tests: moto's server (`moto_server`), plus the one rule of AWS
that moto leaves out and the tests need: a presigned URL is refused once X-Amz-Date plus
X-Amz-Expires has passed (403 AccessDenied, "Request has expired", as S3 answers).

Usage: s3_test_server.py -H 127.0.0.1 -p PORT (the arguments of moto_server).
"""

import argparse
import datetime
import urllib.parse

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple

EXPIRED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
)


def expired(query):
    """True when the query is a presigned URL whose lifetime has passed."""
    params = urllib.parse.parse_qs(query)
    date = params.get("X-Amz-Date", [None])[0]
    expires = params.get("X-Amz-Expires", [None])[0]
    if not date or not expires:
        return False
    try:
        signed = datetime.datetime.strptime(date, "%Y%m%dT%H%M%SZ").replace(
            tzinfo=datetime.timezone.utc
        )
        lifetime = datetime.timedelta(seconds=int(expires))
    except ValueError:
        return True
    return datetime.datetime.now(datetime.timezone.utc) > signed + lifetime


def with_expiry(app):
    def wrapped(environ, start_response):
        if expired(environ.get("QUERY_STRING", "")):
            start_response(
                "403 Forbidden",
                [("Content-Type", "application/xml"), ("Content-Length", str(len(EXPIRED)))],
            )
            return [EXPIRED]
        return app(environ, start_response)

    return wrapped


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args()
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, with_expiry(app), threaded=True)


if __name__ == "__main__":
    main()
