"""A `Policy` as JSON and back: the one (de)serialiser of the stored recommendations, the API and the form.

`policy_from_json` checks the shape of what a person wrote and names the bad field (`PolicyError.field`);
the replay engine's own checks (costline.advisor.replay.check_policy) judge the values' meaning.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from costline.advisor.findings import ModelSwap, Policy

SWAP_FIELDS = {f.name: f for f in dataclasses.fields(ModelSwap)}
POLICY_FIELDS = {f.name: f for f in dataclasses.fields(Policy)}


class PolicyError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def policy_to_json(policy: Policy) -> dict[str, Any]:
    out = dataclasses.asdict(policy)
    out["swaps"] = [dataclasses.asdict(s) for s in policy.swaps]
    out["features"] = list(policy.features)
    out["models"] = list(policy.models)
    return out


def _int(name: str, value: Any, *, nullable: bool = True) -> int | None:
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyError(name, f"must be a whole number, got {value!r}")
    return value


def _float(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PolicyError(name, f"must be a number, got {value!r}")
    return float(value)


def _strings(name: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise PolicyError(name, "must be a list of strings")
    return tuple(value)


def _swap(index: int, raw: Any) -> ModelSwap:
    name = f"swaps[{index}]"
    if not isinstance(raw, dict):
        raise PolicyError(name, 'must be an object like {"from_model": "gpt-4o", "to_model": "gpt-4o-mini"}')
    unknown = sorted(set(raw) - set(SWAP_FIELDS))
    if unknown:
        raise PolicyError(f"{name}.{unknown[0]}", f"unknown field; use any of {', '.join(SWAP_FIELDS)}")
    for required in ("from_model", "to_model"):
        if not isinstance(raw.get(required), str) or not raw[required]:
            raise PolicyError(f"{name}.{required}", "is required: a model name")
    feature = raw.get("feature")
    if feature is not None and not isinstance(feature, str):
        raise PolicyError(f"{name}.feature", "must be a feature name or null")
    rate = _float(f"{name}.escalation_rate", raw.get("escalation_rate", 0.0)) or 0.0
    if not 0.0 <= rate <= 1.0:
        raise PolicyError(f"{name}.escalation_rate", "must be between 0 and 1")
    return ModelSwap(
        from_model=raw["from_model"],
        to_model=raw["to_model"],
        feature=feature or None,
        cascade=bool(raw.get("cascade", False)),
        escalation_rate=rate,
    )


def policy_from_json(raw: Any) -> Policy:
    """The policy `raw` describes; raises PolicyError naming the first bad field."""
    if not isinstance(raw, dict):
        raise PolicyError("policy", "must be an object")
    unknown = sorted(set(raw) - set(POLICY_FIELDS))
    if unknown:
        raise PolicyError(unknown[0], f"unknown field; use any of {', '.join(POLICY_FIELDS)}")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if name == "swaps":
            if not isinstance(value or [], list):
                raise PolicyError("swaps", "must be a list of model swaps")
            values[name] = tuple(_swap(i, s) for i, s in enumerate(value or []))
        elif name == "max_output_tokens":
            if not isinstance(value or {}, dict):
                raise PolicyError(name, 'must be an object of feature → cap, e.g. {"summarize": 400}')
            caps = {}
            for feature, cap in (value or {}).items():
                number = _int(f"max_output_tokens.{feature}", cap, nullable=False)
                if number is None or number < 1:
                    raise PolicyError(f"max_output_tokens.{feature}", "must be at least 1 token")
                caps[str(feature)] = number
            values[name] = caps
        elif name in ("features", "models"):
            values[name] = _strings(name, value)
        elif name == "semantic_cache_threshold":
            threshold = _float(name, value)
            if threshold is not None and not 0.0 < threshold <= 1.0:
                raise PolicyError(name, "is a similarity between 0 (exclusive) and 1")
            values[name] = threshold
        elif isinstance(POLICY_FIELDS[name].default, bool):
            if not isinstance(value, bool):
                raise PolicyError(name, "must be true or false")
            values[name] = value
        else:
            number = _int(name, value)
            if number is not None and number < 0:
                raise PolicyError(name, "cannot be negative")
            values[name] = number
    return Policy(**values)
