"""Seed databases: ``sample``, the demo schema (documented in tdslite/README.md).

Written in T-SQL and run through the engine itself, so the seed also exercises tdslite.
"""

from __future__ import annotations

import datetime as dt
import random

_REGIONS = ["north", "south", "east", "west"]
_NAMES = [
    "Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra", "Barbara Liskov",
    "Donald Knuth", "Margaret Hamilton", "Ken Thompson", "Frances Allen", "John Backus",
    "Radia Perlman", "Leslie Lamport", "Tony Hoare", "Katherine Johnson", "Dennis Ritchie",
    "Shafi Goldwasser", "Niklaus Wirth", "Jean Sammet", "Butler Lampson", "Sophie Wilson",
    "Vint Cerf", "Annie Easley", "Robin Milner", "Adele Goldberg",
]  # fmt: skip
_PRODUCTS = [
    ("Widget", "widgets", "4.99"), ("Gadget", "gadgets", "12.50"), ("Doohickey", "widgets", "0.75"),
    ("Sprocket", "parts", "2.10"), ("Flange", "parts", "7.25"), ("Gizmo", "gadgets", "19.99"),
    ("Thingamajig", "misc", "3.33"), ("Whatsit", "misc", "9.00"), ("Cog", "parts", "1.05"),
    ("Lever", "parts", "5.40"), ("Dial", "gadgets", "8.80"), ("Knob", "parts", "0.99"),
]  # fmt: skip

SCHEMA = """
CREATE TABLE customers (
    id int IDENTITY(1,1) PRIMARY KEY,
    name nvarchar(100) NOT NULL,
    email nvarchar(200) NOT NULL,
    region nvarchar(20) NOT NULL,
    created_at datetime2(3) NOT NULL DEFAULT SYSDATETIME()
);
CREATE TABLE products (
    id int IDENTITY(1,1) PRIMARY KEY,
    name nvarchar(100) NOT NULL,
    category nvarchar(50) NOT NULL,
    price decimal(10,2) NOT NULL,
    in_stock bit NOT NULL DEFAULT 1
);
CREATE TABLE orders (
    id int IDENTITY(1,1) PRIMARY KEY,
    customer_id int NOT NULL REFERENCES customers(id),
    product_id int NOT NULL REFERENCES products(id),
    quantity int NOT NULL,
    amount decimal(12,2) NOT NULL,
    status nvarchar(20) NOT NULL,
    placed_at datetimeoffset(3) NOT NULL
);
CREATE TABLE all_types (
    id int PRIMARY KEY,
    c_bit bit NULL, c_tinyint tinyint NULL, c_smallint smallint NULL, c_int int NULL,
    c_bigint bigint NULL, c_decimal decimal(18,4) NULL, c_numeric numeric(38,10) NULL,
    c_money money NULL, c_smallmoney smallmoney NULL, c_real real NULL, c_float float NULL,
    c_char char(10) NULL, c_varchar varchar(50) NULL, c_nchar nchar(10) NULL,
    c_nvarchar nvarchar(50) NULL, c_nvarchar_max nvarchar(max) NULL,
    c_varchar_max varchar(max) NULL, c_binary binary(4) NULL, c_varbinary varbinary(50) NULL,
    c_varbinary_max varbinary(max) NULL, c_date date NULL, c_time time(7) NULL,
    c_datetime datetime NULL, c_smalldatetime smalldatetime NULL, c_datetime2 datetime2(7) NULL,
    c_datetimeoffset datetimeoffset(7) NULL, c_uniqueidentifier uniqueidentifier NULL
);
"""

ALL_TYPES_ROWS = """
INSERT INTO all_types VALUES (1, 1, 255, -32768, -2147483648, 9223372036854775807,
    12345678901234.5678, 1234567890123456789012345678.0123456789, 922337203685477.5807,
    -214748.3648, 3.5, 2.718281828459045, 'char', 'varchar', N'nchar', N'nvarchar ünïcødé ✓',
    N'max ' + REPLICATE(N'x', 5000), 'ascii max', 0x01020304, 0xDEADBEEF, 0x00FF00FF,
    '2024-02-29', '23:59:59.9999999', '2024-02-29 13:14:15.997', '2024-02-29 13:14:00',
    '2024-02-29 13:14:15.1234567', '2024-02-29 13:14:15.1234567 -05:30',
    '6F9619FF-8B86-D011-B42D-00C04FC964FF');
INSERT INTO all_types (id) VALUES (2);
"""


def _sample_rows() -> list[str]:
    rng = random.Random(20261127)
    start = dt.datetime(2026, 1, 5, 9, 30)
    lines = ["INSERT INTO customers (name, email, region, created_at) VALUES"]
    values = []
    for i, name in enumerate(_NAMES):
        email = name.lower().replace(" ", ".") + "@example.com"
        created = start + dt.timedelta(days=i * 3, minutes=i * 7)
        values.append(
            f"(N'{name}', N'{email}', N'{_REGIONS[i % 4]}', '{created:%Y-%m-%d %H:%M:%S}.{i:03d}')"
        )
    lines.append(",\n".join(values) + ";")
    lines.append("INSERT INTO products (name, category, price, in_stock) VALUES")
    lines.append(
        ",\n".join(
            f"(N'{n}', N'{c}', {p}, {int(i % 5 != 4)})" for i, (n, c, p) in enumerate(_PRODUCTS)
        )
        + ";"
    )
    orders = []
    for i in range(60):
        customer = rng.randrange(1, len(_NAMES) + 1)
        product = rng.randrange(1, len(_PRODUCTS) + 1)
        quantity = rng.randrange(1, 10)
        amount = f"{float(_PRODUCTS[product - 1][2]) * quantity:.2f}"
        status = rng.choice(["new", "paid", "shipped", "shipped", "cancelled"])
        placed = start + dt.timedelta(days=30 + i, hours=rng.randrange(0, 24))
        offset = ["+00:00", "+01:00", "-05:00", "+05:30"][i % 4]
        orders.append(
            f"({customer}, {product}, {quantity}, {amount}, N'{status}',"
            f" '{placed:%Y-%m-%d %H:%M:%S}.000 {offset}')"
        )
    lines.append(
        "INSERT INTO orders (customer_id, product_id, quantity, amount, status, placed_at) VALUES"
    )
    lines.append(",\n".join(orders) + ";")
    return ["\n".join(lines)]


SEEDS: dict[str, list[str]] = {"sample": [SCHEMA, ALL_TYPES_ROWS, *_sample_rows()]}
