"""The engine's one HTTP client layer (registry pulls and pushes, the cache services, `ADD <url>`).

`client.HttpClient` is a urllib3 connection pool with timeouts, redirects, proxies from the environment, a retry
policy (`retry.RetryPolicy`), an auth hook for challenge-response schemes, streaming bodies and `Range` resume of
a download that broke off. Every failure is one `errors.HttpError`. urllib3 is imported on first use, so importing
this package stays cheap.
"""
