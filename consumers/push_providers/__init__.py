"""Offline push providers behind one interface, used by the ``push`` group (`consumers.push`).

Here, not in a top-level package, because the push group is their only user: a provider is
how that group's handler talks to the outside, like `consumers.effects` is how the others
talk to the bus. Modules by role:

- `base`: `Notification` (what a push says), `Outcome`, the `Provider` protocol and the
  retry loop every provider shares (tenacity: 5xx, 429 and network errors are retried with
  backoff a few times, then the push is recorded as failed — never blocking a partition);
- `webhook`: POST JSON, HMAC-signed like business webhooks, to the business's own push
  service (which speaks to its vendors: Huawei, Xiaomi, ...);
- `apns`: Apple, HTTP/2 with token-based auth (ES256 provider token);
- `fcm`: Firebase Cloud Messaging HTTP v1 (OAuth2 bearer from a service account's RS256 JWT
  grant);
- `configured`: the providers ``[push]`` settings enable.
"""
