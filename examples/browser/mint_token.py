# Mints a wshub connection token (HS256 JWT) on your backend: `pip install pyjwt`,
# then `SECRET=... python3 mint_token.py alice`. SECRET is client.token.hmac_secret_key.
import os
import sys
import time

import jwt

user = sys.argv[1] if len(sys.argv) > 1 else "alice"
token = jwt.encode({"sub": user, "exp": int(time.time()) + 3600}, os.environ["SECRET"], algorithm="HS256")
print(token)
