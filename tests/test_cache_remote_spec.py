"""`--cache-to/--cache-from` parsing, gha URL/version selection and env fallback (BuildKit's rules), the token,
the cache config's validation, and the HTTP client's 429 handling against the emulator."""

from __future__ import annotations

import base64
import json
import time

import pytest

from workbench.cache.remote import RemoteCacheError
from workbench.cache.remote.format import MEDIA_TYPE, loads
from workbench.cache.remote.gha import VERSION, GhaConfig, parse_duration, parse_token
from workbench.cache.remote.spec import CacheSpecError, parse_cache_spec
from workbench.http.retry import retry_after


def _token(ac: object = '[{"Scope":"refs/heads/main","Permission":3}]', **claims: object) -> str:
    body = base64.urlsafe_b64encode(json.dumps({"ac": ac, **claims}).encode()).rstrip(b"=").decode()
    return f"e30.{body}.sig"


TOKEN = _token()


def test_the_constant_version_is_buildkits() -> None:
    assert VERSION == "693bb7016429d80366022f036f84856888c9f13e00145f5f6f4dce303a38d6f2"


@pytest.mark.parametrize(("attrs", "url", "version"), [
    ({"url_v2": "http://h/v2/"}, "http://h/v2/", 2),  # url_v2 alone is enough (v0.20)
    ({"url": "http://h/v1/", "url_v2": "http://h/v2/"}, "http://h/v2/", 2),  # url_v2 wins
    ({"url": "http://h/v1/", "url_v2": "http://h/v2/", "version": "1"}, "http://h/v1/", 1),
    ({"url": "http://h/v1/"}, "http://h/v1/", 1),
    ({"url": "https://results-receiver.actions.githubusercontent.com/"},
     "https://results-receiver.actions.githubusercontent.com/", 2),
    ({"url": "http://h/v1/", "version": "2"}, "http://h/v1/", 2),
])
def test_url_and_version_selection(attrs: dict[str, str], url: str, version: int) -> None:
    cfg = GhaConfig.from_attrs({**attrs, "token": TOKEN})
    assert (cfg.url, cfg.version, cfg.scope, cfg.timeout) == (url, version, "buildkit", 600.0)


@pytest.mark.parametrize(("attrs", "error"), [
    ({"url_v2": "http://h/", "version": "1", "token": TOKEN}, "url not set for github actions cache"),
    ({"url": "http://h/"}, "token not set for github actions cache"),
    ({"url": "http://h/", "token": TOKEN, "version": "x"}, "failed to parse version"),
    ({"url": "http://h/", "token": TOKEN, "timeout": "ten"}, "invalid timeout"),
    ({"url": "http://h/", "token": _token(exp=time.time() - 10)}, "token is expired"),
    ({"url": "http://h/", "token": "abc"}, "invalid token"),
])
def test_config_errors(attrs: dict[str, str], error: str) -> None:
    with pytest.raises(RemoteCacheError, match=error):
        GhaConfig.from_attrs(attrs)


@pytest.mark.parametrize(("text", "env", "want"), [
    ("type=gha", {"ACTIONS_CACHE_URL": "http://c/", "ACTIONS_RUNTIME_TOKEN": TOKEN},
     {"url": "http://c/", "token": TOKEN}),
    ("type=gha", {"ACTIONS_RESULTS_URL": "http://r/", "ACTIONS_RUNTIME_TOKEN": TOKEN},
     {"url": "http://r/", "token": TOKEN}),
    ("type=gha", {"ACTIONS_CACHE_SERVICE_V2": "true", "ACTIONS_RESULTS_URL": "http://r/",
                  "ACTIONS_CACHE_URL": "http://c/", "ACTIONS_RUNTIME_TOKEN": TOKEN},
     {"url_v2": "http://r/", "url": "http://c/", "token": TOKEN}),
    ("type=gha,version=1", {"ACTIONS_CACHE_SERVICE_V2": "1", "ACTIONS_RESULTS_URL": "http://r/",
                            "ACTIONS_RUNTIME_TOKEN": TOKEN},
     {"version": "1", "url": "http://r/", "token": TOKEN}),
    (f"type=gha,url_v2=http://mine/,token={TOKEN}", {"ACTIONS_RUNTIME_TOKEN": "other"},
     {"url_v2": "http://mine/", "token": TOKEN}),
])
def test_actions_environment_fallback(text: str, env: dict[str, str], want: dict[str, str]) -> None:
    assert parse_cache_spec(text, export=True, env=env).attrs == want


def test_generic_attributes() -> None:
    spec = parse_cache_spec("type=local,dest=/x,mode=max,ignore-error=true", export=True, env={})
    assert (spec.mode, spec.ignore_error) == ("max", True)
    spec = parse_cache_spec("type=local,src=/x,mode=bogus", export=False, env={})
    assert (spec.mode, spec.ignore_error) == ("min", False)  # an invalid mode is min, as BuildKit
    spec = parse_cache_spec("localhost:5000/cache", export=False, env={})  # buildx: a bare ref is type=registry
    assert (spec.type, spec.attrs) == ("registry", {"ref": "localhost:5000/cache"})
    with pytest.raises(CacheSpecError, match="--cache-to 'type=registry': ref= is required"):
        parse_cache_spec("type=registry", export=True, env={})
    with pytest.raises(CacheSpecError, match="--cache-from 'type=s3,bucket=b': unsupported cache type 's3'"):
        parse_cache_spec("type=s3,bucket=b", export=False, env={})


def test_token_scopes_case_insensitive() -> None:
    scopes = parse_token(_token('[{"scope":"refs/heads/a","permission":1},{"Scope":"refs/heads/b","Permission":3}]'))
    assert [(s.scope, s.permission) for s in scopes] == [("refs/heads/a", 1), ("refs/heads/b", 3)]


def test_durations() -> None:
    assert parse_duration("10m") == 600 and parse_duration("1m30s") == 90 and parse_duration("500ms") == 0.5
    with pytest.raises(RemoteCacheError):
        parse_duration("10")


def test_retry_after() -> None:
    assert retry_after("3", 1.0) == 3.0
    assert retry_after(None, 2.0) == 2.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 5.0) == 0.0  # a date in the past: go now
    assert retry_after("soon", 4.0) == 4.0


GOOD_LAYER = {"digest": "sha256:" + "a" * 64, "size": 3, "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
              "diffID": "sha256:" + "b" * 64}


@pytest.mark.parametrize(("doc", "error"), [
    (b"not json", "not JSON"),
    ({"mediaType": "application/vnd.buildkit.cacheconfig.v0"}, "not a workbench cache config"),
    ({"mediaType": MEDIA_TYPE, "layers": [GOOD_LAYER], "records": [{"key": "k", "layers": [1]}]},
     "names a layer that is not in the config"),
    ({"mediaType": MEDIA_TYPE, "layers": [{**GOOD_LAYER, "digest": "sha256:../../x"}], "records": []},
     "malformed digest"),
    ({"mediaType": MEDIA_TYPE, "layers": [{**GOOD_LAYER, "size": -1}], "records": []}, "bad layer"),
])
def test_bad_cache_configs_are_refused(doc: object, error: str) -> None:
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    with pytest.raises(RemoteCacheError, match=error):
        loads(data)


def test_config_round_trip() -> None:
    doc = {"mediaType": MEDIA_TYPE, "layers": [GOOD_LAYER], "records": [{"key": "k", "name": "n", "layers": [0, 0]}]}
    config = loads(json.dumps(doc).encode())
    assert loads(config.dumps()) == config
