// tradingview-js: the default TradingView rule's core, in JavaScript.
//
// A rule plugin built with componentize-js (StarlingMonkey) against the
// `rule` world in `wit/`. It implements the same behaviour as the Rust
// `plugins/rules/tradingview` rule for buy and sell alerts, JSON or text:
// symbol (exchange prefix removed), side, exact decimal quantity, market /
// limit / stop / stop-limit orders, time in force, reference price, signal
// id and `sentiment: flat` (reduce-only); and for exits (`exit`, `close`,
// `flat`, `flatten`), which close the account's position in the symbol
// with one reduce-only market order. Only exits ask the host for the
// account (`broker-view`, with `portfolio = "on-request"` in plugin.toml),
// so other alerts never wait for the broker. Reversals, sizing, bracket
// legs and trailing stops are left to the Rust rule: alerts asking for them
// are refused as `unsupported`.
//
// Money never passes through a JS number: decimals are parsed from the
// alert's text into a BigInt mantissa and a scale, and JSON is read by the
// small parser below, which keeps numbers as their source text.

import { getPortfolio } from 'algobanana:plugin/broker-view@0.1.0';
import { write } from 'algobanana:plugin/log@0.1.0';

const JSON_EXAMPLE = '{"ticker":"AAPL","action":"buy","quantity":"10","price":"190.35"}';
const TEXT_EXAMPLE = '`buy 10 AAPL` or `sell 0.5 BTCUSD at 64250 limit`';
const TIME_IN_FORCE = ['day', 'gtc', 'ioc', 'fok', 'opg', 'cls'];
const MAX_MANTISSA = (1n << 63n) - 1n;

/** A rule error: componentize-js turns a thrown `{ tag, val }` into `err`. */
function fail(tag, message) {
  return { tag, val: message };
}
const invalid = (message) => fail('invalid-alert', message);

/** Exact decimal text (`"10"`, `"0.25"`, `"-3.5"`) to the WIT record. */
function decimal(text, key) {
  const m = /^\s*([+-]?)(\d+)(?:\.(\d+))?\s*$/.exec(String(text));
  if (!m) {
    throw invalid(`\`${key}\`: \`${text}\` is not a decimal number such as 10, 0.5 or 64250.25`);
  }
  let frac = (m[3] || '').replace(/0+$/, '');
  let mantissa = BigInt(m[2] + frac);
  if (frac.length > 28) throw invalid(`\`${key}\`: more than 28 decimal places`);
  if (mantissa > MAX_MANTISSA) {
    throw invalid(`\`${key}\`: ${text} has too many digits to pass exactly (at most 18 significant digits)`);
  }
  let scale = frac.length;
  if (mantissa === 0n) scale = 0;
  if (m[1] === '-') mantissa = -mantissa;
  return { mantissa, scale };
}

function positive(d, key) {
  if (d.mantissa <= 0n) throw invalid(`\`${key}\` must be greater than zero`);
  return d;
}

function symbolOf(text) {
  const parts = String(text).split(':');
  const symbol = parts[parts.length - 1].trim();
  if (!/^[A-Za-z0-9./_-]{1,32}$/.test(symbol)) {
    throw invalid(
      `symbol \`${symbol}\` is not valid; expected 1–32 letters, digits, '.', '/', '-' or '_' such as AAPL or BTC/USD`,
    );
  }
  return symbol.toUpperCase();
}

/** The side of an exit alert until the position decides it. */
const EXIT = 'exit';

function side(word) {
  switch (String(word).toLowerCase()) {
    case 'buy':
    case 'long':
      return 'buy';
    case 'sell':
    case 'short':
      return 'sell';
    case 'exit':
    case 'close':
    case 'flat':
    case 'flatten':
      return EXIT;
    case 'reverse':
      throw fail('unsupported', `action \`${word}\` is not supported by tradingview-js; use the built-in tradingview rule`);
    default:
      throw invalid(`action \`${word}\` is not supported; expected buy, sell or exit (close, flat)`);
  }
}

function timeInForce(text) {
  const t = String(text).toLowerCase();
  if (!TIME_IN_FORCE.includes(t)) {
    throw invalid(`time in force \`${t}\` is unknown; expected day, gtc, ioc, fok, opg or cls`);
  }
  return t;
}

// --- a JSON reader that keeps numbers as text (exact money) -------------

class Num {
  constructor(text) {
    this.text = text;
  }
}

function parseJson(text) {
  let i = 0;
  const ws = () => {
    while (i < text.length && ' \t\r\n'.includes(text[i])) i++;
  };
  const bad = (what) => {
    throw invalid(`alert body is not valid JSON (${what} at offset ${i}); expected an object such as ${JSON_EXAMPLE}`);
  };
  const value = () => {
    ws();
    const c = text[i];
    if (c === '{') {
      i++;
      const out = {};
      ws();
      if (text[i] === '}') return i++, out;
      for (;;) {
        ws();
        if (text[i] !== '"') bad('expected a key');
        const k = str();
        ws();
        if (text[i++] !== ':') bad('expected `:`');
        out[k] = value();
        ws();
        if (text[i] === ',') i++;
        else if (text[i] === '}') return i++, out;
        else bad('expected `,` or `}`');
      }
    }
    if (c === '[') {
      i++;
      const out = [];
      ws();
      if (text[i] === ']') return i++, out;
      for (;;) {
        out.push(value());
        ws();
        if (text[i] === ',') i++;
        else if (text[i] === ']') return i++, out;
        else bad('expected `,` or `]`');
      }
    }
    if (c === '"') return str();
    const lit = /^(true|false|null|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)/.exec(text.slice(i));
    if (!lit) bad('unexpected character');
    i += lit[0].length;
    if (lit[0] === 'true') return true;
    if (lit[0] === 'false') return false;
    if (lit[0] === 'null') return null;
    return new Num(lit[0]);
  };
  const str = () => {
    const m = /^"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/.exec(text.slice(i));
    if (!m) bad('bad string');
    i += m[0].length;
    return JSON.parse(m[0]);
  };
  const v = value();
  ws();
  if (i !== text.length) bad('trailing text');
  return v;
}

function stringField(map, keys) {
  for (const k of keys) {
    const v = map[k];
    if (v === undefined || v === null) continue;
    if (v instanceof Num) return v.text;
    if (typeof v !== 'string') throw invalid(`\`${k}\` must be a string`);
    if (v.trim() === '') continue;
    return v.trim();
  }
  return undefined;
}

function numberField(map, keys) {
  for (const k of keys) {
    const v = map[k];
    if (v === undefined || v === null) continue;
    if (typeof v === 'string' && v.trim() === '') continue;
    if (v instanceof Num || typeof v === 'string') return decimal(v instanceof Num ? v.text : v, k);
    throw invalid(`\`${k}\` must be a number such as "10" or 0.5`);
  }
  return undefined;
}

function orderType(kind, limit, stop) {
  let k = kind === undefined ? undefined : kind.toLowerCase().replace(/[_\- ]/g, '');
  if (k === undefined) {
    k = limit && stop ? 'stoplimit' : limit ? 'limit' : stop ? 'stop' : 'market';
  }
  switch (k) {
    case 'market':
      return { tag: 'market' };
    case 'limit':
      if (!limit) throw invalid('orderType is limit but `limitPrice` is missing');
      return { tag: 'limit', val: positive(limit, 'limitPrice') };
    case 'stop':
      if (!stop) throw invalid('orderType is stop but `stopPrice` is missing');
      return { tag: 'stop', val: positive(stop, 'stopPrice') };
    case 'stoplimit':
      if (!stop || !limit) throw invalid('orderType is stop_limit; it needs both `stopPrice` and `limitPrice`');
      return { tag: 'stop-limit', val: { stop: positive(stop, 'stopPrice'), limit: positive(limit, 'limitPrice') } };
    default:
      throw invalid(`orderType \`${kind}\` is unknown; expected market, limit, stop or stop_limit`);
  }
}

// Alert fields the Rust rule reads and this port does not: refused rather
// than dropped, so an order never goes out without its bracket, trail or
// sizing.
const RUST_ONLY = [
  'takeProfit',
  'stopLoss',
  'trailPrice',
  'trail_price',
  'trailPercent',
  'trail_percent',
  'notional',
  'percentOfEquity',
  'riskPercent',
];

function fromJson(text) {
  const map = parseJson(text);
  if (typeof map !== 'object' || map === null || Array.isArray(map) || map instanceof Num) {
    throw invalid(`alert JSON must be an object such as ${JSON_EXAMPLE}`);
  }
  for (const key of RUST_ONLY) {
    if (map[key] !== undefined && map[key] !== null) {
      throw fail('unsupported', `\`${key}\` is not supported by tradingview-js; use the built-in tradingview rule`);
    }
  }
  const ticker = stringField(map, ['ticker', 'symbol']);
  if (ticker === undefined) throw invalid(`alert JSON has no \`ticker\` or \`symbol\`; expected an object such as ${JSON_EXAMPLE}`);
  const action = stringField(map, ['action']);
  if (action === undefined) throw invalid(`alert JSON has no \`action\`; expected "buy" or "sell", as in ${JSON_EXAMPLE}`);
  const sentiment = stringField(map, ['sentiment']);
  const s = sentiment === undefined ? undefined : sentiment.toLowerCase();
  if (s !== undefined && !['long', 'short', 'bullish', 'bearish', 'flat'].includes(s)) {
    throw invalid(`\`sentiment\` is \`${s}\`; expected long, short, bullish, bearish or flat`);
  }
  const act = side(action);
  let quantity = numberField(map, ['quantity', 'contracts', 'qty']);
  if (quantity === undefined) {
    // An exit's size is the position's.
    if (act !== EXIT) throw invalid('alert JSON has no `quantity` (or `contracts`); add "quantity": "10" to the alert');
    quantity = { mantissa: 1n, scale: 0 };
  }
  const tif = stringField(map, ['timeInForce', 'time_in_force']);
  const reference = numberField(map, ['price', 'close']);
  return {
    symbol: symbolOf(ticker),
    side: act,
    quantity: positive(quantity, 'quantity'),
    orderType: orderType(
      stringField(map, ['orderType', 'order_type', 'type']),
      numberField(map, ['limitPrice', 'limit_price']),
      numberField(map, ['stopPrice', 'stop_price']),
    ),
    timeInForce: tif === undefined ? 'day' : timeInForce(tif),
    clientOrderId: stringField(map, ['signalId', 'signal_id', 'clientOrderId']),
    reduceOnly: s === 'flat',
    referencePrice: reference === undefined ? undefined : positive(reference, 'price'),
    takeProfit: undefined,
    stopLoss: undefined,
  };
}

function fromText(text) {
  const bad = (why) => invalid(`${why}; expected text such as ${TEXT_EXAMPLE}`);
  const words = text.split(/\s+/);
  const act = words.length > 0 ? side(words[0]) : undefined;
  // `exit AAPL at 189`: an exit names no quantity (its size is the
  // position's).
  if (act === EXIT) words.splice(1, 0, '1');
  if (words.length < 3) throw bad('alert text names no quantity and symbol');
  const [, qty, sym, ...rest] = words;
  const intent = {
    symbol: symbolOf(sym),
    side: act,
    quantity: positive(decimal(qty, 'quantity'), 'quantity'),
    orderType: { tag: 'market' },
    timeInForce: 'day',
    clientOrderId: undefined,
    reduceOnly: false,
    referencePrice: undefined,
    takeProfit: undefined,
    stopLoss: undefined,
  };
  let kind;
  for (let i = 0; i < rest.length; i++) {
    const w = rest[i].toLowerCase();
    if (w === 'at' || w === '@') {
      if (i + 1 >= rest.length) throw bad('`at` must be followed by a price');
      intent.referencePrice = decimal(rest[++i], 'price');
    } else if (w === 'market' || w === 'limit' || w === 'stop') {
      kind = w;
    } else if (TIME_IN_FORCE.includes(w)) {
      intent.timeInForce = w;
    } else {
      throw bad(`unexpected word \`${rest[i]}\``);
    }
  }
  if (kind === 'limit' || kind === 'stop') {
    if (!intent.referencePrice) throw bad(`a ${kind} order needs a price: \`... at 64250 ${kind}\``);
    intent.orderType = { tag: kind, val: intent.referencePrice };
  }
  return intent;
}

/** Sum of exact decimals (BigInt mantissas), normalised. */
function sum(decimals) {
  const scale = Math.max(0, ...decimals.map((d) => d.scale));
  let mantissa = 0n;
  for (const d of decimals) mantissa += BigInt(d.mantissa) * 10n ** BigInt(scale - d.scale);
  let s = scale;
  while (s > 0 && mantissa % 10n === 0n) {
    mantissa /= 10n;
    s -= 1;
  }
  return { mantissa, scale: mantissa === 0n ? 0 : s };
}

/**
 * The intents of an exit: one reduce-only market order that closes the
 * position in the symbol, or none when flat. `account()` is asked only
 * here: the host fetches the portfolio from the broker on request.
 */
function close(template, account) {
  const portfolio = account();
  const position = sum(
    portfolio.positions.filter((p) => p.symbol.toUpperCase() === template.symbol).map((p) => p.quantity),
  );
  if (position.mantissa === 0n) return [];
  const long = position.mantissa > 0n;
  return [
    {
      ...template,
      side: long ? 'sell' : 'buy',
      quantity: { mantissa: long ? position.mantissa : -position.mantissa, scale: position.scale },
      orderType: { tag: 'market' },
      reduceOnly: true,
      takeProfit: undefined,
      stopLoss: undefined,
      clientOrderId: template.clientOrderId === undefined ? undefined : `${template.clientOrderId}-x`,
    },
  ];
}

/** The route account from the host (`broker-view`), or why there is none. */
function hostAccount() {
  try {
    return getPortfolio();
  } catch (e) {
    // componentize-js throws an import's `err` value, wrapped or not.
    const err = e && e.payload !== undefined ? e.payload : e;
    const why = err && err.val !== undefined ? err.val : String(err);
    throw fail('unsupported', `this action needs the account's positions: ${why}`);
  }
}

/**
 * The rule itself: an alert's body and the route's config to intents;
 * `account()` gives the route account's portfolio, for exits.
 */
function rule(body, config, account) {
  let text;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(body).trim();
  } catch {
    throw invalid(`alert body is not UTF-8 text; expected JSON such as ${JSON_EXAMPLE} or text such as ${TEXT_EXAMPLE}`);
  }
  if (text === '') throw invalid(`alert body is empty; expected JSON such as ${JSON_EXAMPLE} or text such as ${TEXT_EXAMPLE}`);
  if (config.trim() !== '' && config.trim() !== '{}') {
    throw fail('invalid-config', 'tradingview-js takes no rule config; remove `rule_config` from the route');
  }
  const intent = text.startsWith('{') ? fromJson(text) : fromText(text);
  return intent.side === EXIT ? close(intent, account) : [intent];
}

/**
 * The `evaluate` export: one alert in, order intents out.
 * @param {{ id: string, receivedAt: bigint, route: string, contentType: string, body: Uint8Array }} alert
 * @param {string} config the route's rule settings (JSON); this rule takes none
 */
export function evaluate(alert, config, _portfolio) {
  const intents = rule(alert.body, config, hostAccount);
  for (const intent of intents) write('debug', `${intent.side} ${intent.symbol}`);
  return intents;
}

// Pre-initialisation. componentize-js runs this file's top level once at
// build time and snapshots the engine's heap (Wizer), and every instance
// starts from that snapshot. SpiderMonkey compiles a function's bytecode
// lazily, on its first call, and a fresh instance per alert would pay that
// on every alert. Running the parsers once here puts their bytecode (and
// the compiled regular expressions) in the snapshot. Pure functions only:
// the host's imports (`log`) do not exist at build time. The results are
// thrown away; nothing here is state a later alert could observe.
const encoder = new TextEncoder();
for (const sample of [
  JSON_EXAMPLE,
  '{"symbol":"NASDAQ:MSFT","action":"sell","contracts":2,"orderType":"stop_limit","limitPrice":"410.5","stopPrice":"411","timeInForce":"gtc","signalId":"warm","sentiment":"flat"}',
  '{"ticker":"BTCUSD","action":"buy","qty":"0.25","limit_price":"64250","close":64000,"flags":[true,false,null]}',
  'buy 10 AAPL',
  'sell 0.5 BTCUSD at 64250 limit gtc',
  'buy 1 ES @ 5000 stop',
]) {
  try {
    const noAccount = () => {
      throw fail('unsupported', 'no account at build time');
    };
    for (const intent of rule(encoder.encode(sample), '{}', noAccount)) `${intent.side} ${intent.symbol}`;
  } catch {
    // Never expected; a sample that fails still warms what it reached.
  }
}
