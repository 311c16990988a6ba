"""tradingview-py: the default TradingView rule's core, in Python.

A rule plugin built with componentize-py against the `rule` world in
`wit/`. It implements the same behaviour as the Rust `plugins/rules/
tradingview` rule for buy and sell alerts, JSON or text: symbol (exchange
prefix removed), side, exact decimal quantity, market / limit / stop /
stop-limit orders, time in force, reference price, signal id and
`sentiment: flat` (reduce-only); and for exits (`exit`, `close`, `flat`,
`flatten`), which close the account's position in the symbol with one
reduce-only market order. Only exits ask the host for the account
(`broker-view`, with `portfolio = "on-request"` in plugin.toml), so other
alerts never wait for the broker. Reversals, sizing, bracket legs and
trailing stops are left to the Rust rule: alerts asking for them are
refused as `unsupported`.

Money never passes through a float: JSON numbers are read as
`decimal.Decimal` and cross the boundary as an integer mantissa and a scale.
"""

import json
import re
from decimal import Decimal, InvalidOperation
from typing import Callable, List, Optional

import wit_world
from componentize_py_types import Err
from wit_world.imports import broker_view, log
from wit_world.imports.types import (
    Alert,
    Decimal as WitDecimal,
    OrderIntent,
    OrderType_Limit,
    OrderType_Market,
    OrderType_Stop,
    OrderType_StopLimit,
    Portfolio,
    RuleError_InvalidAlert,
    RuleError_InvalidConfig,
    RuleError_Unsupported,
    Side,
    StopLimit,
    TimeInForce,
)

JSON_EXAMPLE = '{"ticker":"AAPL","action":"buy","quantity":"10","price":"190.35"}'
TEXT_EXAMPLE = "`buy 10 AAPL` or `sell 0.5 BTCUSD at 64250 limit`"
TIME_IN_FORCE = {t.name.lower(): t for t in TimeInForce}
SYMBOL = re.compile(r"^[A-Za-z0-9./_-]{1,32}$")
NUMBER = re.compile(r"^[+-]?\d+(\.\d+)?$")
MAX_MANTISSA = (1 << 63) - 1
# Alert fields the Rust rule reads and this port does not: refused rather
# than dropped, so an order never goes out without its bracket, trail or
# sizing.
RUST_ONLY = (
    "takeProfit",
    "stopLoss",
    "trailPrice",
    "trail_price",
    "trailPercent",
    "trail_percent",
    "notional",
    "percentOfEquity",
    "riskPercent",
)


def invalid(message: str) -> Err:
    return Err(RuleError_InvalidAlert(message))


def decimal(value, key: str) -> WitDecimal:
    """Exact decimal (text or `Decimal`) to the WIT record."""
    text = str(value).strip()
    if not NUMBER.match(text):
        raise invalid(f"`{key}`: `{text}` is not a decimal number such as 10, 0.5 or 64250.25")
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise invalid(f"`{key}`: `{text}` is not a decimal number such as 10, 0.5 or 64250.25")
    sign, digits, exponent = d.normalize().as_tuple()
    mantissa = int("".join(map(str, digits)) or "0")
    scale = -exponent if exponent < 0 else 0
    if exponent > 0:
        mantissa *= 10**exponent
    if mantissa > MAX_MANTISSA:
        raise invalid(f"`{key}`: {text} has too many digits to pass exactly (at most 18 significant digits)")
    if scale > 28:
        raise invalid(f"`{key}`: more than 28 decimal places")
    if mantissa == 0:
        scale = 0
    return WitDecimal(-mantissa if sign else mantissa, scale)


def positive(d: WitDecimal, key: str) -> WitDecimal:
    if d.mantissa <= 0:
        raise invalid(f"`{key}` must be greater than zero")
    return d


def symbol_of(text: str) -> str:
    symbol = str(text).split(":")[-1].strip()
    if not SYMBOL.match(symbol):
        raise invalid(
            f"symbol `{symbol}` is not valid; expected 1–32 letters, digits, '.', '/', '-' or '_' such as AAPL or BTC/USD"
        )
    return symbol.upper()


# The side of an exit alert until the position decides it.
EXIT = "exit"


def side(word: str):
    w = str(word).lower()
    if w in ("buy", "long"):
        return Side.BUY
    if w in ("sell", "short"):
        return Side.SELL
    if w in ("exit", "close", "flat", "flatten"):
        return EXIT
    if w == "reverse":
        raise Err(RuleError_Unsupported(f"action `{word}` is not supported by tradingview-py; use the built-in tradingview rule"))
    raise invalid(f"action `{word}` is not supported; expected buy, sell or exit (close, flat)")


def time_in_force(text: str) -> TimeInForce:
    t = str(text).lower()
    if t not in TIME_IN_FORCE:
        raise invalid(f"time in force `{t}` is unknown; expected day, gtc, ioc, fok, opg or cls")
    return TIME_IN_FORCE[t]


def string_field(m: dict, keys) -> Optional[str]:
    for k in keys:
        v = m.get(k)
        if v is None:
            continue
        if isinstance(v, Decimal):
            return str(v)
        if not isinstance(v, str):
            raise invalid(f"`{k}` must be a string")
        if v.strip():
            return v.strip()
    return None


def number_field(m: dict, keys) -> Optional[WitDecimal]:
    for k in keys:
        v = m.get(k)
        if v is None or (isinstance(v, str) and not v.strip()):
            continue
        if isinstance(v, (str, Decimal)) and not isinstance(v, bool):
            return decimal(v, k)
        raise invalid(f'`{k}` must be a number such as "10" or 0.5')
    return None


def order_type(kind: Optional[str], limit: Optional[WitDecimal], stop: Optional[WitDecimal]):
    if kind is None:
        k = "stoplimit" if limit and stop else "limit" if limit else "stop" if stop else "market"
    else:
        k = re.sub(r"[_\- ]", "", kind.lower())
    if k == "market":
        return OrderType_Market()
    if k == "limit":
        if limit is None:
            raise invalid("orderType is limit but `limitPrice` is missing")
        return OrderType_Limit(positive(limit, "limitPrice"))
    if k == "stop":
        if stop is None:
            raise invalid("orderType is stop but `stopPrice` is missing")
        return OrderType_Stop(positive(stop, "stopPrice"))
    if k == "stoplimit":
        if stop is None or limit is None:
            raise invalid("orderType is stop_limit; it needs both `stopPrice` and `limitPrice`")
        return OrderType_StopLimit(StopLimit(positive(stop, "stopPrice"), positive(limit, "limitPrice")))
    raise invalid(f"orderType `{kind}` is unknown; expected market, limit, stop or stop_limit")


def from_json(text: str) -> OrderIntent:
    try:
        m = json.loads(text, parse_float=Decimal, parse_int=Decimal)
    except ValueError as e:
        raise invalid(f"alert body is not valid JSON ({e}); expected an object such as {JSON_EXAMPLE}")
    if not isinstance(m, dict):
        raise invalid(f"alert JSON must be an object such as {JSON_EXAMPLE}")
    for key in RUST_ONLY:
        if m.get(key) is not None:
            raise Err(
                RuleError_Unsupported(f"`{key}` is not supported by tradingview-py; use the built-in tradingview rule")
            )
    ticker = string_field(m, ["ticker", "symbol"])
    if ticker is None:
        raise invalid(f"alert JSON has no `ticker` or `symbol`; expected an object such as {JSON_EXAMPLE}")
    action = string_field(m, ["action"])
    if action is None:
        raise invalid(f'alert JSON has no `action`; expected "buy" or "sell", as in {JSON_EXAMPLE}')
    sentiment = string_field(m, ["sentiment"])
    s = sentiment.lower() if sentiment is not None else None
    if s is not None and s not in ("long", "short", "bullish", "bearish", "flat"):
        raise invalid(f"`sentiment` is `{s}`; expected long, short, bullish, bearish or flat")
    act = side(action)
    quantity = number_field(m, ["quantity", "contracts", "qty"])
    if quantity is None:
        # An exit's size is the position's.
        if act != EXIT:
            raise invalid('alert JSON has no `quantity` (or `contracts`); add "quantity": "10" to the alert')
        quantity = WitDecimal(1, 0)
    tif = string_field(m, ["timeInForce", "time_in_force"])
    reference = number_field(m, ["price", "close"])
    return OrderIntent(
        symbol=symbol_of(ticker),
        side=act,
        quantity=positive(quantity, "quantity"),
        order_type=order_type(
            string_field(m, ["orderType", "order_type", "type"]),
            number_field(m, ["limitPrice", "limit_price"]),
            number_field(m, ["stopPrice", "stop_price"]),
        ),
        time_in_force=TimeInForce.DAY if tif is None else time_in_force(tif),
        client_order_id=string_field(m, ["signalId", "signal_id", "clientOrderId"]),
        reduce_only=s == "flat",
        reference_price=None if reference is None else positive(reference, "price"),
        take_profit=None,
        stop_loss=None,
    )


def from_text(text: str) -> OrderIntent:
    def bad(why: str) -> Err:
        return invalid(f"{why}; expected text such as {TEXT_EXAMPLE}")

    words = text.split()
    act = side(words[0]) if words else None
    # `exit AAPL at 189`: an exit names no quantity (its size is the
    # position's).
    if act == EXIT:
        words.insert(1, "1")
    if len(words) < 3:
        raise bad("alert text names no quantity and symbol")
    _, qty, sym, *rest = words
    intent = OrderIntent(
        symbol=symbol_of(sym),
        side=act,
        quantity=positive(decimal(qty, "quantity"), "quantity"),
        order_type=OrderType_Market(),
        time_in_force=TimeInForce.DAY,
        client_order_id=None,
        reduce_only=False,
        reference_price=None,
        take_profit=None,
        stop_loss=None,
    )
    kind = None
    i = 0
    while i < len(rest):
        w = rest[i].lower()
        if w in ("at", "@"):
            if i + 1 >= len(rest):
                raise bad("`at` must be followed by a price")
            intent.reference_price = decimal(rest[i + 1], "price")
            i += 1
        elif w in ("market", "limit", "stop"):
            kind = w
        elif w in TIME_IN_FORCE:
            intent.time_in_force = TIME_IN_FORCE[w]
        else:
            raise bad(f"unexpected word `{rest[i]}`")
        i += 1
    if kind in ("limit", "stop"):
        if intent.reference_price is None:
            raise bad(f"a {kind} order needs a price: `... at 64250 {kind}`")
        cls = OrderType_Limit if kind == "limit" else OrderType_Stop
        intent.order_type = cls(intent.reference_price)
    return intent


def close(template: OrderIntent, account: Callable[[], Portfolio]) -> List[OrderIntent]:
    """The intents of an exit: one reduce-only market order that closes the
    position in the symbol, or none when flat. `account()` is asked only
    here: the host fetches the portfolio from the broker on request."""
    portfolio = account()
    position = sum(
        (Decimal(p.quantity.mantissa).scaleb(-p.quantity.scale) for p in portfolio.positions if p.symbol.upper() == template.symbol),
        Decimal(0),
    )
    if position == 0:
        return []
    template.side = Side.SELL if position > 0 else Side.BUY
    template.quantity = decimal(format(abs(position), "f"), "quantity")
    template.order_type = OrderType_Market()
    template.reduce_only = True
    template.take_profit = None
    template.stop_loss = None
    if template.client_order_id is not None:
        template.client_order_id = f"{template.client_order_id}-x"
    return [template]


def host_account() -> Portfolio:
    """The route account from the host (`broker-view`), or why there is none."""
    try:
        return broker_view.get_portfolio()
    except Err as e:
        why = getattr(e.value, "value", e.value)
        raise Err(RuleError_Unsupported(f"this action needs the account's positions: {why}"))


def rule(body: bytes, config: str, account: Callable[[], Portfolio]) -> List[OrderIntent]:
    """The rule itself: an alert's body and the route's config to intents;
    `account()` gives the route account's portfolio, for exits."""
    try:
        text = bytes(body).decode("utf-8").strip()
    except UnicodeDecodeError:
        raise invalid(
            f"alert body is not UTF-8 text; expected JSON such as {JSON_EXAMPLE} or text such as {TEXT_EXAMPLE}"
        )
    if not text:
        raise invalid(f"alert body is empty; expected JSON such as {JSON_EXAMPLE} or text such as {TEXT_EXAMPLE}")
    if config.strip() not in ("", "{}"):
        raise Err(RuleError_InvalidConfig("tradingview-py takes no rule config; remove `rule_config` from the route"))
    intent = from_json(text) if text.startswith("{") else from_text(text)
    return close(intent, account) if intent.side == EXIT else [intent]


class WitWorld(wit_world.WitWorld):
    def evaluate(self, alert: Alert, config: str, portfolio: Optional[Portfolio]) -> List[OrderIntent]:
        intents = rule(alert.body, config, host_account)
        for intent in intents:
            log.write(log.Level.DEBUG, f"{intent.side.name.lower()} {intent.symbol}")
        return intents


def _warm() -> None:
    """Pre-initialisation.

    componentize-py imports this module once at build time and snapshots
    the interpreter's memory, and every instance starts from that snapshot.
    Running the rule once here leaves what a first call would otherwise
    build in every fresh instance (the JSON decoder's and the regular
    expressions' caches, method caches, decimal contexts) in the snapshot.
    Pure code only: the host's imports (`log`) do not exist at build time.
    The results are thrown away; nothing here is state a later alert could
    observe.
    """
    def no_account() -> Portfolio:
        raise Err(RuleError_Unsupported("no account at build time"))

    for sample in (
        JSON_EXAMPLE,
        '{"symbol":"NASDAQ:MSFT","action":"sell","contracts":2,"orderType":"stop_limit",'
        '"limitPrice":"410.5","stopPrice":"411","timeInForce":"gtc","signalId":"warm","sentiment":"flat"}',
        '{"ticker":"BTCUSD","action":"buy","qty":"0.25","limit_price":"64250","close":64000}',
        "buy 10 AAPL",
        "sell 0.5 BTCUSD at 64250 limit gtc",
        "buy 1 ES @ 5000 stop",
    ):
        try:
            for intent in rule(sample.encode(), "{}", no_account):
                f"{intent.side.name.lower()} {intent.symbol}"
        except Err:
            pass  # Never expected; a sample that fails still warms what it reached.


_warm()
