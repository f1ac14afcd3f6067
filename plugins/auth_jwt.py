"""JwtVerifier: the auth plugin's bearer JWTs (HS256 with a secret, RS256 with a PEM key or a JWKS file).

A module of its own so that PyJWT and cryptography are loaded only by a gateway configured for JWTs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt

from gateway.principal import Principal
from gateway.schema import ConfigError
from plugins.auth import JwtSettings, Rejected


class JwtVerifier:
    """Checks signature, issuer, audience and expiry, then maps the claims to a Principal."""

    def __init__(self, settings: JwtSettings, admin_groups: frozenset[str]) -> None:
        self.settings = settings
        self.admin_groups = admin_groups
        self.key: Any = None
        self.jwks: dict[str | None, Any] = {}
        if settings.secret is not None:
            self.algorithm, self.key = "HS256", settings.secret.reveal()
        elif settings.public_key_file is not None:
            self.algorithm = "RS256"
            try:
                pem = Path(settings.public_key_file).read_bytes()
                self.key = jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256).prepare_key(pem)
            except (OSError, ValueError, jwt.InvalidKeyError) as exc:
                raise ConfigError("jwt.public_key_file", f"not an RSA public key: {exc}") from None
        else:
            self.algorithm = "RS256"
            try:
                keyset = jwt.PyJWKSet.from_json(Path(settings.jwks_file or "").read_text())
            except (OSError, ValueError, jwt.PyJWKSetError, jwt.PyJWKError) as exc:
                raise ConfigError("jwt.jwks_file", f"not a JWKS document: {exc}") from None
            self.jwks = {k.key_id: k.key for k in keyset.keys if k.algorithm_name in ("RS256", None)}
            if len(self.jwks) == 1:
                self.jwks[None] = next(iter(self.jwks.values()))  # a token without "kid" may use the only key

    def verify(self, token: str) -> Principal:
        s = self.settings
        try:
            key = self.key
            if key is None:
                key = self.jwks.get(jwt.get_unverified_header(token).get("kid"))
                if key is None:
                    raise Rejected("unknown_signing_key")
            claims = jwt.decode(token, key, algorithms=[self.algorithm], audience=s.audience, issuer=s.issuer,
                                leeway=s.leeway_seconds, options={"require": ["exp", "iss", "aud"]})
        except jwt.ExpiredSignatureError:
            raise Rejected("expired_token") from None
        except jwt.InvalidAudienceError:
            raise Rejected("wrong_audience") from None
        except jwt.InvalidIssuerError:
            raise Rejected("wrong_issuer") from None
        except jwt.InvalidSignatureError:
            raise Rejected("bad_signature") from None
        except jwt.InvalidTokenError:
            raise Rejected("invalid_token") from None
        subject = claims.get(s.id_claim)
        if not isinstance(subject, (str, int)) or subject == "":
            raise Rejected("invalid_token")
        groups = claims.get(s.groups_claim) or ()
        if isinstance(groups, str):
            groups = groups.split(",")
        groups = tuple(str(g).strip() for g in groups if str(g).strip()) if isinstance(groups, (list, tuple, str)) else ()
        name = claims.get(s.name_claim)
        return Principal(id=f"jwt:{subject}", name=name if isinstance(name, str) and name else str(subject),
                         is_admin=not self.admin_groups.isdisjoint(groups), groups=groups, via="jwt")
