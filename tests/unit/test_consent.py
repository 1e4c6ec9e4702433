"""Reading consent (serving.consent) from hand-built customers tables: only an explicit answer allows
contact, the cautious way round for each meaning."""

from __future__ import annotations

import pandas as pd
import pytest

from features.history import history_from_frames
from serving.config import ConsentConfig
from serving.consent import allows_contact, no_contact


@pytest.mark.parametrize(
    ("value", "opt_out", "opt_in"),
    [
        (True, False, True),
        (False, True, False),
        ("yes", False, True),
        (" No ", True, False),
        (1, False, True),
        (0.0, True, False),
        (None, True, False),  # nothing recorded: no opt-out, but no opt-in either
        (float("nan"), True, False),
        ("", True, False),
        ("maybe", False, False),  # not an answer: no contact either way
        (2, False, False),
    ],
)
def test_only_an_explicit_answer_allows_contact(value: object, opt_out: bool, opt_in: bool) -> None:
    assert allows_contact(value, "opt_out") is opt_out
    assert allows_contact(value, "opt_in") is opt_in


def _history() -> object:
    t = pd.Timestamp("2024-01-10")
    transactions = pd.DataFrame(
        {"customer_id": ["a", "b", "c", "d"], "timestamp": [t] * 4, "amount": [1.0] * 4}
    )
    customers = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d"],
            "contact_opt_out": ["false", "true", "unknown", None],
            "email_opt_in": [1, 0, 1, None],
        }
    )
    return history_from_frames(transactions, customers)


def test_the_customers_who_may_not_be_contacted() -> None:
    history = _history()
    assert no_contact(history, ConsentConfig()) is None  # not configured: everyone may be contacted
    assert no_contact(history, ConsentConfig(attribute="contact_opt_out")) == {"b", "c"}  # d: no opt-out
    # opt-in: d recorded nothing, so no consent
    assert no_contact(history, ConsentConfig(attribute="email_opt_in", meaning="opt_in")) == {"b", "d"}


def test_a_configured_attribute_the_history_lacks_is_refused() -> None:
    with pytest.raises(
        ValueError, match=r"consent\.attribute: the history's customers table has no column 'sms_ok'"
    ):
        no_contact(_history(), ConsentConfig(attribute="sms_ok"))
