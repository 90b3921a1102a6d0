"""A parameter value longer than the maximum length its TYPE_INFO declares is refused as SQL Server
refuses it: error 8016 naming the parameter's position and name and the type code, on both of the
RPC parser's paths (the inline nvarchar read and `read_param`), and the connection serves on.
Values at the declared length pass. python-tds sends what its parameter says, so it can send
both."""

from __future__ import annotations

from typing import Any

import pytds
import pytest
from pytds import tds_base, tds_types

from tdslite import TdsServer
from tests.tdslite._tds_helpers import in_thread
from tests.tdslite.test_client_pytds import connect

# (declared type, the python-tds type the value travels as, a value at its length, one longer,
# the TDS type code)
CASES = [
    ("nvarchar(3)", tds_types.NVarCharType(size=3), "abc", "abcd", 0xE7),
    ("nvarchar(2)", tds_types.NVarCharType(size=2), "\U0001f600", "\U0001f600a", 0xE7),
    ("nchar(2)", tds_types.NCharType(size=2), "ab", "abc", 0xE7),  # python-tds sends NVARCHAR
    ("varchar(3)", tds_types.VarCharType(size=3), "abc", "abcd", 0xA7),
    ("varbinary(2)", tds_types.VarBinaryType(size=2), b"\x00\x01", b"\x00\x01\x02", 0xA5),
]


def _run(conn: pytds.Connection, declared: str, wire: Any, value: Any) -> list[Any]:
    """``SELECT @v`` by sp_executesql, @v declared ``declared`` and sent as ``wire``."""
    cursor = conn.cursor()
    sess = cursor._session
    params = [
        sess.make_param("", "SELECT @v AS v"),
        sess.make_param("", f"@v {declared}"),
        tds_base.Param(name="@v", type=wire, value=value),
    ]
    sess.submit_rpc(tds_base.SP_EXECUTESQL, params, 0)
    sess.begin_response()
    sess.find_result_or_done()
    rows: list[Any] = cursor.fetchall()
    return rows


@pytest.mark.parametrize(("declared", "wire", "fits", "longer", "code"), CASES)
async def test_a_value_longer_than_its_type_info_is_error_8016(
    tds_server: TdsServer, declared: str, wire: Any, fits: Any, longer: Any, code: int
) -> None:
    def run() -> tuple[list[Any], pytds.Error, list[Any]]:
        with connect(tds_server) as conn:
            good = _run(conn, declared, wire, fits)
            with pytest.raises(pytds.Error) as refused:
                _run(conn, declared, wire, longer)
            after = _run(conn, declared, wire, fits)
            return good, refused.value, after

    good, error, after = await in_thread(run)
    expected = fits.rstrip() if isinstance(fits, str) else fits
    assert good == after == [(expected,)]
    assert getattr(error, "msg_no", None) == 8016, error
    assert f'Parameter 3 ("@v"): Data type 0x{code:02X} has an invalid data length' in str(error)
