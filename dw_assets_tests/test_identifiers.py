"""Client names are validated and identifiers quoted before anything reaches SQL."""
import pytest

from dw_assets.identifiers import InvalidIdentifier, quote_ident, staging_db_for, validate_client_name


@pytest.mark.parametrize("name", ["acme", "client_001", "ab", "a" + "b" * 40])
def test_valid_client_names(name):
    assert validate_client_name(name) == name
    assert staging_db_for(name) == f"{name}__staging"


@pytest.mark.parametrize(
    "name",
    ["x;drop database mysql", "Acme", "o'neil", "back`tick", "two words", "a", "1abc", "_x", "é_client",
     "a" * 43, "", "select", "mysql", "dw_control", "acme__staging", 'quo"te'],
)
def test_invalid_client_names_are_refused_with_the_reason(name):
    with pytest.raises(InvalidIdentifier, match="invalid client name"):
        validate_client_name(name)


def test_quote_ident_escapes_backticks_and_refuses_unusable_names():
    assert quote_ident("orders") == "`orders`"
    assert quote_ident("we`ird") == "`we``ird`"
    assert quote_ident("ünï ☃") == "`ünï ☃`"
    for bad in ("", "a\x00b", "x" * 65):
        with pytest.raises(InvalidIdentifier):
            quote_ident(bad)
