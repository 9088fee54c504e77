"""Verifies outbound webhook requests with PyPI's standardwebhooks (an independent
implementation of the Standard Webhooks signature scheme).

Reads {"secret": "whsec_...", "requests": [{"body": "...", "headers": {...}}]} on stdin and
prints how many requests verify with that secret (a timestamp check included).
"""

import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

given = json.load(sys.stdin)
hook = Webhook(given["secret"])
passed = 0
for request in given["requests"]:
    try:
        hook.verify(request["body"], request["headers"])
        passed += 1
    except WebhookVerificationError:
        pass
print(passed)
