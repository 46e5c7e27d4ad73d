// auraseal-loader.js: load scripts and stylesheets only after WebCrypto has
// verified their bytes. Dependency-free ES module, no build step.
//
//   import { loadScript, loadStyle, loadPackage } from "/auraseal-loader.js";
//
// Accepts W3C SRI metadata ("sha384-… sha512-…", strongest algorithm wins)
// and AuraSeal strings ("auraseal-sha512-<primary>" or the dual
// "auraseal-sha512-<primary>-<secondary>": either digest passes).  Every URL
// is fetched once, with CORS; only the verified bytes are run.  Fallback URLs
// are tried in order on a network error or a mismatch.  Signature-based SRI
// ("ed25519-<key>"): where the browser enforces it (detected once per
// document) loadScript defers to a native <script integrity>; elsewhere the
// loader checks the signature headers itself before running.  See docs/WEB.md.

const ALGORITHMS = Object.freeze({
  sha256: { name: "SHA-256", size: 32 },
  sha384: { name: "SHA-384", size: 48 },
  sha512: { name: "SHA-512", size: 64 },
});
const STRENGTH = ["sha256", "sha384", "sha512"];
const B64 = /^[A-Za-z0-9+/]+={0,2}$/;
const ED25519_SPKI_PREFIX = "302a300506032b6570032100";
const MANIFEST_TYPE = "auraseal/manifest";
const DEFAULT_TIMEOUT_MS = 30000;
const DEFAULT_MAX_BYTES = 64 * 1024 * 1024;
const STATE = Symbol.for("auraseal.loader.installed");

// --- typed errors -------------------------------------------------------------

/** Base class: every rejection of this module is an AuraSealError. */
export class AuraSealError extends Error {
  constructor(message, { url = "", reason = "error", cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = new.target.name;
    this.url = url;
    this.reason = reason;
  }
}
/** An integrity string that cannot be parsed (or has no usable token). */
export class MalformedIntegrityError extends AuraSealError {}
/** Bytes whose digest matches none of the expected ones. */
export class IntegrityMismatchError extends AuraSealError {
  constructor(message, { expected = "", actual = "", ...rest } = {}) {
    super(message, { reason: "mismatch", ...rest });
    this.expected = expected;
    this.actual = actual;
  }
}
/** Network error, non-2xx status, timeout or an oversized response. */
export class FetchError extends AuraSealError {}
/** No URL (primary or fallback) delivered verified bytes; see `attempts`. */
export class BlockedError extends AuraSealError {
  constructor(message, { attempts = [], ...rest } = {}) {
    super(message, { reason: "blocked", ...rest });
    this.attempts = attempts;
  }
}
/** Verified bytes that the page refused to run (usually its CSP). */
export class ExecutionError extends AuraSealError {}
/** Bad arguments (threshold, keys, options). */
export class ConfigError extends AuraSealError {}
/** A manifest that is not a well-formed AuraSeal envelope. */
export class ManifestError extends AuraSealError {}
/** Signed metadata that cannot be trusted. */
export class TrustError extends AuraSealError {}
export class BadSignatureError extends TrustError {}
export class UnknownKeyError extends TrustError {}
export class ThresholdError extends TrustError {}
export class ExpiredError extends TrustError {}

// --- small helpers ---------------------------------------------------------------

function b64encode(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

function b64decode(text) {
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function fromHex(text) {
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.substr(i * 2, 2), 16);
  return out;
}

function equalBytes(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

function subtle() {
  if (!globalThis.crypto || !globalThis.crypto.subtle) {
    throw new AuraSealError(
      "WebCrypto is unavailable (the page is not a secure context: use https or localhost)",
      { reason: "no-webcrypto" },
    );
  }
  return globalThis.crypto.subtle;
}

function absolute(url, base) {
  return new URL(String(url), base || document.baseURI).href;
}

function emit(target, type, detail) {
  const t = target || document;
  t.dispatchEvent(new CustomEvent(type, { detail, bubbles: true }));
}

// --- integrity strings -----------------------------------------------------------

function decodeDigest(algorithm, text, where) {
  if (!text || !B64.test(text) || text.length % 4 !== 0) {
    throw new MalformedIntegrityError(`digest is not standard padded base64: ${where}`, {
      reason: "malformed-integrity",
    });
  }
  const raw = b64decode(text);
  if (raw.length !== ALGORITHMS[algorithm].size) {
    throw new MalformedIntegrityError(
      `${algorithm} digest must be ${ALGORITHMS[algorithm].size} bytes, got ${raw.length}: ${where}`,
      { reason: "malformed-integrity" },
    );
  }
  return raw;
}

/**
 * Parse SRI metadata or an AuraSeal string into
 * `{kind, algorithm, digests: Uint8Array[], text, sri}`.
 * Throws MalformedIntegrityError when no usable digest remains.
 */
export function parseIntegrity(text) {
  if (typeof text === "object" && text !== null && Array.isArray(text.digests)) return text;
  if (typeof text !== "string" || !text.trim()) {
    throw new MalformedIntegrityError("empty integrity string", { reason: "malformed-integrity" });
  }
  const s = text.trim();
  if (s.startsWith("auraseal-")) {
    if (/\s/.test(s)) {
      throw new MalformedIntegrityError(`whitespace inside AuraSeal string: ${s}`, {
        reason: "malformed-integrity",
      });
    }
    const fields = s.split("-");
    if (fields.length !== 3 && fields.length !== 4) {
      throw new MalformedIntegrityError(`expected auraseal-<alg>-<primary>[-<secondary>]: ${s}`, {
        reason: "malformed-integrity",
      });
    }
    const algorithm = fields[1];
    if (!Object.hasOwn(ALGORITHMS, algorithm)) {
      throw new MalformedIntegrityError(`unsupported algorithm '${algorithm}': ${s}`, {
        reason: "malformed-integrity",
      });
    }
    const digests = fields.slice(2).map((f) => decodeDigest(algorithm, f, s));
    return freezeIntegrity("auraseal", algorithm, digests, s);
  }
  const sri = parseSRI(text); // untrimmed: only Chromium's separators count
  if (sri.tokens.length === 0) {
    const why = sri.keys.length
      ? "signature-only metadata has no digest"
      : "no usable integrity token (unknown algorithms only)";
    throw new MalformedIntegrityError(`${why}: ${s}`, { reason: "malformed-integrity" });
  }
  const algorithm = sri.algorithm;
  const digests = sri.tokens.filter((t) => t.algorithm === algorithm).map((t) => t.digest);
  return freezeIntegrity("sri", algorithm, digests, s);
}

// Chromium's reading of integrity metadata (docs/WEB.md, "SRI parity"), the
// same rules as auraseal.integrity.parse_sri: split at ASCII whitespace and
// \v; a token is <sha256|sha384|sha512|ed25519>-<base64 or base64url, = >
// [?options]; anything else is skipped; a digest that cannot be decoded or has
// the wrong length is kept and never matches.
const SRI_SEPARATORS = /[\t\n\v\f\r ]+/;
const SRI_TOKEN = /^(sha256|sha384|sha512|ed25519)-([A-Za-z0-9+/_=-]+)(?:\?[\s\S]*)?$/;

/** Decode standard or url-safe base64, padded or not; empty when undecodable. */
export function decodeLoose(text) {
  const m = /^([A-Za-z0-9+/_-]+)=*$/.exec(text);
  if (!m) return new Uint8Array(0);
  const std = m[1].replace(/-/g, "+").replace(/_/g, "/");
  if (std.length % 4 === 1) return new Uint8Array(0);
  try {
    return b64decode(std + "=".repeat((4 - (std.length % 4)) % 4));
  } catch {
    return new Uint8Array(0);
  }
}

/** `{tokens: [{algorithm, digest}], keys: [Uint8Array], unknown: [string], algorithm}`. */
export function parseSRI(text) {
  const tokens = [];
  const keys = [];
  const unknown = [];
  for (const raw of String(text).split(SRI_SEPARATORS)) {
    if (!raw) continue;
    const m = SRI_TOKEN.exec(raw);
    if (!m) {
      unknown.push(raw);
      continue;
    }
    if (m[1] === "ed25519") keys.push(decodeLoose(m[2]));
    else tokens.push({ algorithm: m[1], digest: decodeLoose(m[2]) });
  }
  const algorithm = tokens.length
    ? tokens.map((t) => t.algorithm).reduce((a, b) => (STRENGTH.indexOf(b) > STRENGTH.indexOf(a) ? b : a))
    : null;
  return { tokens, keys, unknown, algorithm };
}

function freezeIntegrity(kind, algorithm, digests, text) {
  const sri = digests.map((d) => `${algorithm}-${b64encode(d)}`).join(" ");
  return Object.freeze({ kind, algorithm, digests: Object.freeze(digests), text, sri });
}

/** The standard SRI form of an integrity string (`auraseal-` → `sha512-P sha512-S`). */
export function toSRI(integrity) {
  return parseIntegrity(integrity).sri;
}

/** Resolve to the matching token's algorithm, or throw IntegrityMismatchError. */
export async function verifyBytes(bytes, integrity, url = "") {
  const integ = parseIntegrity(integrity);
  const buf = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const actual = new Uint8Array(await subtle().digest(ALGORITHMS[integ.algorithm].name, buf));
  let ok = false;
  for (const d of integ.digests) ok = equalBytes(actual, d) || ok;
  if (!ok) {
    const got = `${integ.algorithm}-${b64encode(actual)}`;
    throw new IntegrityMismatchError(`integrity mismatch: expected ${integ.text}, got ${got}`, {
      url,
      expected: integ.text,
      actual: got,
    });
  }
  return integ.algorithm;
}

// --- signature-based SRI (Unencoded-Digest + RFC 9421 Ed25519 signatures) ---------

const HTTP_ALGS = Object.freeze({ "sha-256": "sha256", "sha-512": "sha512" });
const COMPONENT = '"unencoded-digest";sf';

function lowerHeaders(headers) {
  const out = new Map();
  if (!headers) return out;
  const entries = typeof headers.entries === "function" && !(headers instanceof Map)
    ? headers.entries() : headers instanceof Map ? headers.entries() : Object.entries(headers);
  for (const [k, v] of entries) out.set(String(k).toLowerCase(), String(v));
  return out;
}

function splitMembers(value) {
  const out = [];
  let depth = 0, quoted = false, start = 0;
  for (let i = 0; i < value.length; i++) {
    const c = value[i];
    if (quoted) {
      if (c === "\\") i++;
      else if (c === '"') quoted = false;
    } else if (c === '"') quoted = true;
    else if (c === "(") depth++;
    else if (c === ")") depth--;
    else if (c === "," && depth === 0) {
      out.push(value.slice(start, i).trim());
      start = i + 1;
    }
  }
  out.push(value.slice(start).trim());
  return out.filter((m) => m);
}

function byteSequence(val) {
  val = val.trim();
  if (val.length < 2 || val[0] !== ":" || val[val.length - 1] !== ":") return null;
  try {
    return b64decode(val.slice(1, -1));
  } catch {
    return null;
  }
}

function parseInput(value) {
  value = value.trim();
  const close = value.indexOf(")");
  if (!value.startsWith("(") || close < 0) return null;
  const components = value.slice(1, close).split(/\s+/).filter((c) => c);
  const params = {};
  const re = /;\s*([a-z][a-z0-9_\-.*]*)(?:=("(?:[^"\\]|\\.)*"|[^;,\s]+))?/g;
  let m;
  while ((m = re.exec(value.slice(close + 1))) !== null) params[m[1]] = m[2] ?? "?1";
  const text = (n) => (params[n] && params[n].startsWith('"') ? params[n].slice(1, -1) : params[n]);
  const num = (n) => (params[n] !== undefined && /^-?\d+$/.test(params[n]) ? Number(params[n]) : null);
  return { params: value, components, keyid: text("keyid"), tag: text("tag"),
           expires: num("expires") };
}

/**
 * Verify, as a browser does for integrity="ed25519-<key>", that `headers`
 * carry an Unencoded-Digest matching `bytes` and a valid, unexpired signature
 * by `key` (raw 32 bytes) over it. Resolves to a reason string; throws
 * IntegrityMismatchError otherwise.
 */
export async function verifySignatureHeaders(bytes, headers, key, url = "", nowSeconds = null) {
  const h = lowerHeaders(headers);
  const fail = (why) => {
    throw new IntegrityMismatchError(`${url}: ${why}`, { url, expected: "ed25519 signature" });
  };
  const ud = h.get("unencoded-digest");
  if (!ud) fail("no Unencoded-Digest header");
  const buf = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  let members = 0;
  for (const member of splitMembers(ud)) {
    const eq = member.indexOf("=");
    const alg = HTTP_ALGS[member.slice(0, eq).trim().toLowerCase()];
    if (eq < 0 || !alg) continue;
    const want = byteSequence(member.slice(eq + 1).split(";")[0]);
    const have = new Uint8Array(await subtle().digest(ALGORITHMS[alg].name, buf));
    if (!want || !equalBytes(have, want)) fail("Unencoded-Digest does not match the body");
    members++;
  }
  if (!members) fail("Unencoded-Digest has no sha-256 or sha-512 member");
  const sigs = new Map();
  for (const member of splitMembers(h.get("signature") || "")) {
    const eq = member.indexOf("=");
    if (eq > 0) sigs.set(member.slice(0, eq).trim(), byteSequence(member.slice(eq + 1)));
  }
  const keyid = b64encode(key);
  const now = nowSeconds ?? Math.floor(Date.now() / 1000);
  const reasons = [];
  let cryptoKey = null;
  for (const member of splitMembers(h.get("signature-input") || "")) {
    const eq = member.indexOf("=");
    const label = member.slice(0, eq).trim();
    const inp = eq > 0 ? parseInput(member.slice(eq + 1)) : null;
    const sig = sigs.get(label);
    if (!inp || !sig) continue;
    if (inp.keyid !== keyid) { reasons.push(`${label}: other key`); continue; }
    if (inp.components.length !== 1 || inp.components[0] !== COMPONENT ||
        !["ed25519-integrity", "sri"].includes(inp.tag)) {
      reasons.push(`${label}: not an integrity signature`);
      continue;
    }
    if (inp.expires !== null && inp.expires < now) { reasons.push(`${label}: expired`); continue; }
    const base = new TextEncoder().encode(
      `${COMPONENT}: ${ud.trim()}\n"@signature-params": ${inp.params}`);
    cryptoKey ??= await subtle().importKey("raw", key, { name: "Ed25519" }, false, ["verify"]);
    if (await subtle().verify({ name: "Ed25519" }, cryptoKey, sig, base)) return "signature verified";
    reasons.push(`${label}: signature does not verify`);
  }
  fail(`no valid signature by the key: ${reasons.join("; ") || "no signatures"}`);
}

/**
 * The browser's verdict for integrity metadata on a response (`bytes`,
 * `headers`): {verdict: "pass" | "fail" | "unverified", reason}. The same
 * rules as auraseal.httpsig.browser_verdict (docs/WEB.md, "SRI parity").
 */
export async function browserVerdict(integrity, bytes, headers = null, nowSeconds = null) {
  const sri = parseSRI(integrity);
  const buf = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const h = lowerHeaders(headers);
  if (h.has("unencoded-digest")) {
    for (const member of splitMembers(h.get("unencoded-digest"))) {
      const eq = member.indexOf("=");
      const alg = HTTP_ALGS[member.slice(0, eq).trim().toLowerCase()];
      if (eq < 0 || !alg) continue;
      const want = byteSequence(member.slice(eq + 1).split(";")[0]);
      const have = new Uint8Array(await subtle().digest(ALGORITHMS[alg].name, buf));
      if (!want || !equalBytes(have, want)) {
        return { verdict: "fail", reason: "Unencoded-Digest does not match the body" };
      }
    }
  }
  if (!sri.tokens.length && !sri.keys.length) {
    return { verdict: "unverified", reason: "no usable integrity token" };
  }
  if (sri.tokens.length) {
    const actual = new Uint8Array(await subtle().digest(ALGORITHMS[sri.algorithm].name, buf));
    const ok = sri.tokens.some((t) => t.algorithm === sri.algorithm && equalBytes(actual, t.digest));
    if (!ok) return { verdict: "fail", reason: `no ${sri.algorithm} token matches the body` };
  }
  if (sri.keys.length) {
    if (!headers) return { verdict: "fail", reason: "an ed25519 token needs the response's headers" };
    const reasons = [];
    for (const key of sri.keys) {
      if (key.length !== 32) { reasons.push("ed25519 token is not a 32-byte key"); continue; }
      try {
        await verifySignatureHeaders(buf, headers, key, "", nowSeconds);
        return { verdict: "pass", reason: "signature verified" };
      } catch (e) {
        if (!(e instanceof IntegrityMismatchError)) throw e;
        reasons.push(e.message);
      }
    }
    return { verdict: "fail", reason: reasons.join("; ") };
  }
  return { verdict: "pass", reason: "digest matched" };
}

// --- fetching -----------------------------------------------------------------------

function credentialsFor(crossOrigin) {
  if (crossOrigin === "use-credentials") return "include";
  if (crossOrigin === "omit") return "omit";
  return "same-origin"; // crossorigin="anonymous", the default
}

async function fetchBytes(url, opts = {}, meta = null) {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_BYTES;
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), timeoutMs);
  try {
    let resp;
    try {
      resp = await fetch(url, {
        mode: "cors",
        credentials: credentialsFor(opts.crossOrigin),
        redirect: "follow",
        signal: ctrl.signal,
      });
    } catch (err) {
      const why = ctrl.signal.aborted ? `timed out after ${timeoutMs} ms` : `network error (${err})`;
      throw new FetchError(`${url}: ${why}`, { url, reason: "network", cause: err });
    }
    if (!resp.ok) {
      throw new FetchError(`${url}: HTTP ${resp.status}`, { url, reason: "http-status" });
    }
    if (meta) meta.headers = resp.headers;
    const declared = Number(resp.headers.get("content-length"));
    if (declared > maxBytes) {
      throw new FetchError(`${url}: response larger than ${maxBytes} bytes`, {
        url,
        reason: "too-large",
      });
    }
    if (resp.headers.has("content-length") && !resp.headers.has("content-encoding")) {
      // The declared length bounds the body (HTTP/1.1 framing): read it whole.
      try {
        return new Uint8Array(await resp.arrayBuffer());
      } catch (err) {
        const why = ctrl.signal.aborted ? `timed out after ${timeoutMs} ms` : `read error (${err})`;
        throw new FetchError(`${url}: ${why}`, { url, reason: "network", cause: err });
      }
    }
    const reader = resp.body.getReader();
    const chunks = [];
    let total = 0;
    for (;;) {
      let step;
      try {
        step = await reader.read();
      } catch (err) {
        const why = ctrl.signal.aborted ? `timed out after ${timeoutMs} ms` : `read error (${err})`;
        throw new FetchError(`${url}: ${why}`, { url, reason: "network", cause: err });
      }
      if (step.done) break;
      total += step.value.length;
      if (total > maxBytes) {
        ctrl.abort();
        throw new FetchError(`${url}: response larger than ${maxBytes} bytes`, {
          url,
          reason: "too-large",
        });
      }
      chunks.push(step.value);
    }
    const out = new Uint8Array(total);
    let at = 0;
    for (const c of chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  } finally {
    clearTimeout(timer);
  }
}

/** Fetch `url` and verify its bytes with WebCrypto; resolve to {bytes, algorithm}. */
async function fetchAndVerify(url, integ, opts) {
  const meta = {};
  const bytes = await fetchBytes(url, opts, meta);
  if (integ.kind === "signature") {
    // ed25519- tokens: the response's Unencoded-Digest and signature, checked
    // with WebCrypto as the browser would (and any hash token too)
    const v = await browserVerdict(integ.text, bytes, meta.headers);
    if (v.verdict !== "pass") {
      throw new IntegrityMismatchError(`${url}: ${v.reason}`, { url, expected: integ.text });
    }
    return { bytes, algorithm: "ed25519" };
  }
  return { bytes, algorithm: await verifyBytes(bytes, integ, url) };
}

/**
 * Try `urls` in order until one `step(url)` succeeds (default: fetch and
 * verify with WebCrypto).  Each distinct URL is tried at most once.  Emits
 * auraseal:fallback between attempts, then auraseal:verified or
 * auraseal:blocked.  `prior` lists attempts already made elsewhere (a native
 * tag that failed).  Resolves to `{url, ...step's result}`.
 */
async function acquire(urls, integ, opts, prior = [], step = null) {
  const target = opts.target || document;
  const seen = new Set(prior.map((a) => a.url));
  const list = urls.filter((u) => !seen.has(u) && seen.add(u));
  const attempts = [...prior];
  const requested = prior.length ? prior[0].url : list[0];
  for (let i = 0; i < list.length; i++) {
    const url = list[i];
    try {
      const got = await (step || ((u) => fetchAndVerify(u, integ, opts)))(url);
      emit(target, "auraseal:verified", {
        url,
        requestedUrl: requested,
        integrity: integ.text,
        algorithm: got.algorithm,
        native: Boolean(got.native),
        fallback: attempts.length > 0,
        attempts: attempts.slice(),
      });
      return { ...got, url };
    } catch (err) {
      const e =
        err instanceof AuraSealError
          ? err
          : new FetchError(`${url}: ${err}`, { url, reason: "network", cause: err });
      attempts.push({ url, reason: e.reason, message: e.message });
      if (i + 1 < list.length) {
        emit(target, "auraseal:fallback", {
          url,
          next: list[i + 1],
          reason: e.reason,
          message: e.message,
        });
      }
    }
  }
  const last = attempts.length ? attempts[attempts.length - 1] : { reason: "no-url" };
  emit(target, "auraseal:blocked", {
    url: requested,
    reason: last.reason,
    message: last.message,
    attempts: attempts.slice(),
  });
  throw new BlockedError(
    `${requested}: blocked, no copy verified (${attempts.map((a) => `${a.url}: ${a.reason}`).join("; ")})`,
    { url: requested, attempts },
  );
}

function prepare(url, integrity, opts) {
  let integ;
  try {
    const text = typeof integrity === "string" ? integrity : "";
    const sri = text.trim().startsWith("auraseal-") ? null : parseSRI(text);
    // a value with an ed25519- token passes only with a verified signature
    integ = sri && sri.keys.length
      ? Object.freeze({ kind: "signature", algorithm: "ed25519", digests: [], text, sri: text })
      : parseIntegrity(integrity);
  } catch (err) {
    emit(opts.target, "auraseal:blocked", {
      url: String(url),
      reason: "malformed-integrity",
      message: err.message,
      attempts: [],
    });
    throw err;
  }
  const base = opts.baseURL || document.baseURI;
  const urls = [url, ...(opts.fallbackUrls || [])].map((u) => absolute(u, base));
  return { integ, urls };
}

// --- running verified bytes ------------------------------------------------------

function pageNonce() {
  const own = document.querySelector("script[data-auraseal-loader][nonce]");
  return own ? own.nonce || own.getAttribute("nonce") || "" : "";
}

function runScript(bytes, url, opts) {
  const el = document.createElement("script");
  if (opts.type === "module") el.type = "module";
  el.dataset.aurasealVerified = url;
  const nonce = opts.nonce ?? pageNonce();
  const parent = opts.parent || document.head || document.documentElement;
  if (opts.execution === "inline" || (nonce && opts.execution !== "blob")) {
    // Inline text: allowed by a CSP nonce (or 'unsafe-inline').
    if (nonce) el.nonce = nonce;
    el.textContent = new TextDecoder().decode(bytes);
    return new Promise((resolve, reject) => {
      const onViolation = (ev) => {
        if (ev.target === el || ev.blockedURI === "inline") failed = ev;
      };
      let failed = null;
      document.addEventListener("securitypolicyviolation", onViolation);
      parent.appendChild(el);
      // A classic inline script runs synchronously on insertion; violations
      // are reported asynchronously, so give them one task to arrive.
      setTimeout(() => {
        document.removeEventListener("securitypolicyviolation", onViolation);
        if (failed) {
          reject(
            new ExecutionError(`${url}: verified, but the page's CSP refused inline script`, {
              url,
              reason: "csp",
            }),
          );
        } else resolve(el);
      }, 0);
    });
  }
  // Blob URL of exactly the verified bytes: needs `script-src blob:`.
  const blobUrl = URL.createObjectURL(new Blob([bytes], { type: "text/javascript" }));
  el.src = blobUrl;
  return new Promise((resolve, reject) => {
    el.addEventListener("load", () => {
      URL.revokeObjectURL(blobUrl);
      resolve(el);
    });
    el.addEventListener("error", () => {
      URL.revokeObjectURL(blobUrl);
      reject(
        new ExecutionError(
          `${url}: verified, but the page refused to run it (CSP needs script-src blob: or a nonce)`,
          { url, reason: "csp" },
        ),
      );
    });
    parent.appendChild(el);
  });
}

function applyStyle(bytes, url, opts) {
  const text = new TextDecoder().decode(bytes);
  if (opts.execution !== "inline" && "adoptedStyleSheets" in document && !opts.nonce) {
    // Constructable stylesheet: no blob: or inline CSS needed; relative
    // url()s resolve against the URL the bytes came from.
    const sheet = new CSSStyleSheet({ baseURL: url });
    sheet.replaceSync(text);
    document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
    return sheet;
  }
  const el = document.createElement("style");
  const nonce = opts.nonce ?? pageNonce();
  if (nonce) el.nonce = nonce;
  el.dataset.aurasealVerified = url;
  el.textContent = text;
  (opts.parent || document.head || document.documentElement).appendChild(el);
  return el.sheet;
}

// --- native signature-based SRI: feature detection --------------------------------

const NATIVE = Symbol.for("auraseal.loader.nativeSignatures");
// A well-formed ed25519 token for a key nobody holds (32 zero bytes): a
// browser that checks signatures blocks an unsigned script carrying it.
const PROBE_KEY = `ed25519-${"A".repeat(43)}=`;
const PROBE_CODE = 'document.currentScript && (document.currentScript.dataset.aurasealProbeRan = "1");\n';
const PROBE_TIMEOUT_MS = 5000;

/** Insert one probe script; resolve to {result: "load"|"error"|"timeout", ran}. */
function probeOnce(doc, kind, integrity) {
  return new Promise((resolve) => {
    const src = kind === "blob"
      ? URL.createObjectURL(new Blob([PROBE_CODE], { type: "text/javascript" }))
      : `data:text/javascript;base64,${b64encode(new TextEncoder().encode(PROBE_CODE))}`;
    const el = doc.createElement("script");
    el.crossOrigin = "anonymous";
    el.integrity = integrity;
    const nonce = pageNonce();
    if (nonce) el.nonce = nonce;
    el.dataset.aurasealProbe = kind;
    let timer = null;
    const done = (result) => {
      clearTimeout(timer);
      const ran = el.dataset.aurasealProbeRan === "1";
      el.remove();
      if (kind === "blob") URL.revokeObjectURL(src);
      resolve({ result, ran });
    };
    timer = setTimeout(() => done("timeout"), PROBE_TIMEOUT_MS);
    el.addEventListener("load", () => done("load"));
    el.addEventListener("error", () => done("error"));
    el.src = src;
    (doc.head || doc.documentElement).appendChild(el);
  });
}

/** true / false for one URL scheme; null when the scheme cannot answer (CSP). */
async function probeScheme(doc, kind) {
  const digest = new Uint8Array(
    await subtle().digest("SHA-256", new TextEncoder().encode(PROBE_CODE)));
  // Control: the same script with a matching hash must run (the page lets
  // such URLs run and the browser applies SRI to them).
  const control = await probeOnce(doc, kind, `sha256-${b64encode(digest)}`);
  if (control.result !== "load" || !control.ran) return null;
  const probe = await probeOnce(doc, kind, PROBE_KEY);
  if (probe.ran || probe.result === "load") return false; // unsigned code ran: no check
  return probe.result === "error" ? true : null;
}

/**
 * Does this browser enforce signature-based SRI (`integrity="ed25519-…"`)
 * natively?  Probes once per document with a tiny unsigned script (a Blob
 * URL, else a data: URL) carrying an ed25519 token: a browser that checks
 * signatures blocks it, one that does not runs it.  A control with a hash
 * token must run first; when no scheme can answer (e.g. a CSP allowing
 * neither blob: nor data:) the answer is false, so the loader verifies
 * itself: it never assumes a check the browser might not make.
 */
export function detectNativeSignatureSRI(doc = document) {
  if (!doc[NATIVE]) {
    doc[NATIVE] = (async () => {
      for (const kind of ["blob", "data"]) {
        try {
          const r = await probeScheme(doc, kind);
          if (r !== null) return r;
        } catch {
          // try the next scheme
        }
      }
      return false;
    })();
  }
  return doc[NATIVE];
}

/** "auto" (probe, defer to the browser when it checks) or "loader" (always verify here). */
function signatureMode(opts) {
  const own = document.querySelector("script[data-auraseal-loader][data-auraseal-signatures]");
  const mode = opts.nativeSignatures ?? (own ? own.getAttribute("data-auraseal-signatures") : "auto");
  return mode === "auto" ? "auto" : "loader"; // anything else: the safe side
}

/** Load `url` as a native `<script integrity>`: the browser checks the signature. */
function nativeStep(integ, opts) {
  return (url) => new Promise((resolve, reject) => {
    const el = document.createElement("script");
    if (opts.type === "module") el.type = "module";
    el.crossOrigin = opts.crossOrigin === "use-credentials" ? "use-credentials" : "anonymous";
    el.integrity = integ.text;
    const nonce = opts.nonce ?? pageNonce();
    if (nonce) el.nonce = nonce;
    el.dataset.aurasealNative = url;
    el.addEventListener("load", () => resolve({ element: el, algorithm: "ed25519", native: true }));
    el.addEventListener("error", () => {
      el.remove();
      reject(new AuraSealError(
        `${url}: the browser refused it (signature check, network error or CSP)`,
        { url, reason: "native-error" },
      ));
    });
    el.src = url;
    (opts.parent || document.head || document.documentElement).appendChild(el);
  });
}

// --- public loading API ------------------------------------------------------------

/**
 * Fetch `url` (then each of `opts.fallbackUrls` in order) with CORS, verify
 * against `integrity`, and run the first copy that verifies.
 * Options: fallbackUrls, crossOrigin ("anonymous" | "use-credentials"),
 * type ("classic" | "module"), nonce, execution ("blob" | "inline"),
 * timeoutMs, maxBytes, target (event target, default document), parent,
 * nativeSignatures ("auto": where the browser enforces ed25519- tokens
 * itself, insert a native <script integrity> and let it check; "loader":
 * always fetch and verify here).  Resolves to {url, element}; rejects with BlockedError / MalformedIntegrityError
 * / ExecutionError.
 */
export async function loadScript(url, integrity, opts = {}) {
  const { integ, urls } = prepare(url, integrity, opts);
  const prior = opts.priorAttempts || [];
  if (integ.kind === "signature" && signatureMode(opts) === "auto" &&
      (await detectNativeSignatureSRI(document))) {
    // the browser checks signatures itself: defer to it (no fetch here)
    const native = await acquire(urls, integ, opts, prior, nativeStep(integ, opts));
    return { url: native.url, element: native.element };
  }
  const got = await acquire(urls, integ, opts, prior);
  const element = await runScript(got.bytes, got.url, opts);
  return { url: got.url, element };
}

/** Like loadScript, for a stylesheet (applied as a constructable stylesheet). */
export async function loadStyle(url, integrity, opts = {}) {
  const { integ, urls } = prepare(url, integrity, opts);
  const got = await acquire(urls, integ, opts, opts.priorAttempts || []);
  const sheet = applyStyle(got.bytes, got.url, opts);
  return { url: got.url, sheet };
}

// --- signed manifests ----------------------------------------------------------------

/**
 * RFC 8785 canonical JSON of a parsed JSON value: keys sorted by UTF-16
 * code units, ECMAScript serialization of strings and numbers (which is
 * what RFC 8785 specifies), no whitespace.
 */
export function canonicalJSON(value) {
  if (value === null || typeof value === "boolean" || typeof value === "string") {
    return JSON.stringify(value);
  }
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new ManifestError("non-finite number in JSON");
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map(canonicalJSON).join(",")}]`;
  if (typeof value === "object") {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJSON(value[k])}`).join(",")}}`;
  }
  throw new ManifestError(`cannot canonicalize ${typeof value}`);
}

function rawPublicKey(key) {
  if (key instanceof ArrayBuffer) key = new Uint8Array(key);
  if (key instanceof Uint8Array) {
    if (key.length === 32) return key;
    throw new ConfigError("an Ed25519 public key is 32 bytes", { reason: "bad-key" });
  }
  if (typeof key !== "string") throw new ConfigError("trusted key must be a string or bytes");
  const s = key.trim();
  if (s.includes("-----BEGIN PUBLIC KEY-----")) {
    const body = s.replace(/-----(BEGIN|END) PUBLIC KEY-----/g, "").replace(/\s+/g, "");
    const der = b64decode(body);
    if (der.length !== 44 || hex(der.subarray(0, 12)) !== ED25519_SPKI_PREFIX) {
      throw new ConfigError("PEM key is not an Ed25519 public key", { reason: "bad-key" });
    }
    return der.subarray(12);
  }
  if (/^[0-9a-fA-F]{64}$/.test(s)) return fromHex(s.toLowerCase());
  if (B64.test(s) && s.length === 44) return b64decode(s);
  throw new ConfigError(
    "trusted key must be PEM, 64 hex digits or base64 of the raw 32 bytes",
    { reason: "bad-key" },
  );
}

/** Import trusted keys; resolves to Map(keyid → CryptoKey), keyid = hex SHA-256(raw). */
export async function importTrustedKeys(keys) {
  const out = new Map();
  for (const k of keys || []) {
    const raw = rawPublicKey(k);
    const keyid = hex(new Uint8Array(await subtle().digest("SHA-256", raw)));
    const cryptoKey = await subtle().importKey("raw", raw, { name: "Ed25519" }, false, ["verify"]);
    out.set(keyid, cryptoKey);
  }
  return out;
}

/**
 * Verify a native AuraSeal envelope {signed, signatures:[{keyid, sig}]} as
 * `auraseal.signing.verify_envelope` does: each signature by a trusted key
 * must verify; signatures by unknown keys never count; at least `threshold`
 * distinct trusted keys must have signed.  Resolves to {signed, keyids}.
 */
export async function verifyEnvelope(envelope, { trustedKeys, threshold = 1, url = "" } = {}) {
  const keys = trustedKeys instanceof Map ? trustedKeys : await importTrustedKeys(trustedKeys);
  if (!Number.isInteger(threshold) || threshold < 1) {
    throw new ConfigError("threshold must be an integer of at least 1", { url });
  }
  if (keys.size < threshold) {
    throw new ConfigError(
      `threshold ${threshold} exceeds the ${keys.size} distinct trusted key(s)`,
      { url },
    );
  }
  if (
    !envelope ||
    typeof envelope !== "object" ||
    !envelope.signed ||
    typeof envelope.signed !== "object" ||
    Array.isArray(envelope.signed) ||
    !Array.isArray(envelope.signatures)
  ) {
    throw new ManifestError(`${url}: envelope needs a 'signed' object and a 'signatures' list`, {
      url,
      reason: "malformed-manifest",
    });
  }
  const body = new TextEncoder().encode(canonicalJSON(envelope.signed));
  const good = new Set();
  let unknown = 0;
  for (const [i, s] of envelope.signatures.entries()) {
    if (!s || typeof s !== "object" || typeof s.keyid !== "string") {
      throw new ManifestError(`${url}: signature ${i} is malformed`, {
        url,
        reason: "malformed-manifest",
      });
    }
    const key = keys.get(s.keyid);
    if (!key) {
      unknown += 1;
      continue;
    }
    let sig;
    try {
      if (typeof s.sig !== "string" || !B64.test(s.sig)) throw new Error("not base64");
      sig = b64decode(s.sig);
    } catch {
      throw new BadSignatureError(`${url}: signature ${i} is not base64`, {
        url,
        reason: "bad-signature",
      });
    }
    const ok = await subtle().verify({ name: "Ed25519" }, key, sig, body);
    if (!ok) {
      throw new BadSignatureError(
        `${url}: signature by key ${s.keyid.slice(0, 16)} does not verify`,
        { url, reason: "bad-signature" },
      );
    }
    good.add(s.keyid);
  }
  if (good.size >= threshold) return { signed: envelope.signed, keyids: [...good] };
  if (good.size === 0 && unknown > 0) {
    throw new UnknownKeyError(
      `${url}: signed only by ${unknown} untrusted key(s); none of the trusted keys signed`,
      { url, reason: "unknown-key" },
    );
  }
  throw new ThresholdError(
    `${url}: ${good.size} of the required ${threshold} trusted signature(s)`,
    { url, reason: "threshold" },
  );
}

function safeRelPath(path, url) {
  const bad =
    typeof path !== "string" ||
    path === "" ||
    path.startsWith("/") ||
    path.includes("\\") ||
    /[\u0000-\u001f\u007f]/.test(path) ||
    path.split("/").some((seg) => seg === "" || seg === "." || seg === "..");
  if (bad) {
    throw new ManifestError(`${url}: unsafe file name in manifest: ${JSON.stringify(path)}`, {
      url,
      reason: "unsafe-path",
    });
  }
  return path.split("/").map(encodeURIComponent).join("/");
}

/**
 * Fetch a signed manifest, verify its Ed25519 signatures in the browser
 * against `trustedKeys` with `threshold`, check its type and expiry, then
 * load the listed scripts (and stylesheets) in order with their integrity.
 * Options: trustedKeys (PEM / hex / base64 raw keys), threshold (default 1),
 * base (where files live, relative to the manifest URL; default "./";
 * `auraseal serve` serves them under "files/"), mirrors (more bases, tried
 * in order as fallbacks), include (paths to load, in order; default every
 * .css then every .js/.mjs path, sorted), minVersion, now (ms), plus the
 * loadScript options.  Resolves to {name, version, keyids, loaded}.
 */
export async function loadPackage(manifestUrl, opts = {}) {
  const target = opts.target || document;
  const url = absolute(manifestUrl, opts.baseURL);
  let signed;
  let keyids;
  try {
    const bytes = await fetchBytes(url, opts);
    let envelope;
    try {
      envelope = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
    } catch (err) {
      throw new ManifestError(`${url}: manifest is not valid UTF-8 JSON`, {
        url,
        reason: "malformed-manifest",
        cause: err,
      });
    }
    ({ signed, keyids } = await verifyEnvelope(envelope, {
      trustedKeys: opts.trustedKeys,
      threshold: opts.threshold ?? 1,
      url,
    }));
    if (signed._type !== MANIFEST_TYPE || (signed.spec_version !== 1 && signed.spec_version !== 2)) {
      throw new ManifestError(`${url}: not an AuraSeal manifest (spec_version 1 or 2)`, {
        url,
        reason: "malformed-manifest",
      });
    }
    if (!signed.files || typeof signed.files !== "object" || Array.isArray(signed.files)) {
      throw new ManifestError(`${url}: 'files' must be an object`, {
        url,
        reason: "malformed-manifest",
      });
    }
    const now = opts.now ?? Date.now();
    if (signed.expires !== null && signed.expires !== undefined) {
      const exp = Date.parse(signed.expires);
      if (!(exp > now)) {
        throw new ExpiredError(
          `${url}: manifest '${signed.name}' v${signed.version} expired at ${signed.expires}`,
          { url, reason: "expired" },
        );
      }
    }
    if (opts.minVersion !== undefined && !(signed.version >= opts.minVersion)) {
      throw new TrustError(
        `${url}: version ${signed.version} is older than ${opts.minVersion} (rollback)`,
        { url, reason: "rollback" },
      );
    }
  } catch (err) {
    const e =
      err instanceof AuraSealError
        ? err
        : new ManifestError(`${url}: ${err}`, { url, reason: "malformed-manifest", cause: err });
    emit(target, "auraseal:blocked", { url, reason: e.reason, message: e.message, attempts: [] });
    throw e;
  }
  emit(target, "auraseal:verified", {
    url,
    kind: "manifest",
    name: signed.name,
    version: signed.version,
    keyids,
  });

  const all = Object.keys(signed.files).sort();
  const include =
    opts.include ||
    [...all.filter((p) => p.endsWith(".css")), ...all.filter((p) => /\.m?js$/.test(p))];
  const base = new URL(opts.base ?? "./", url).href;
  const mirrors = (opts.mirrors || []).map((m) => new URL(m, url).href);
  const loaded = [];
  for (const path of include) {
    const entry = signed.files[path];
    if (!entry || typeof entry !== "object") {
      throw new ManifestError(`${url}: '${path}' is not listed in the manifest`, {
        url,
        reason: "not-listed",
      });
    }
    const rel = safeRelPath(path, url);
    const primary = typeof entry.url === "string" ? new URL(entry.url, url).href : base + rel;
    const fallbackUrls = mirrors.map((m) => m + rel);
    const one = { ...opts, fallbackUrls, baseURL: url };
    if (path.endsWith(".css")) {
      await loadStyle(primary, entry.integrity, one);
    } else {
      await loadScript(primary, entry.integrity, {
        ...one,
        type: path.endsWith(".mjs") ? "module" : opts.type,
      });
    }
    loaded.push(path);
  }
  return { name: signed.name, version: signed.version, keyids, loaded };
}

// --- tags in the page ---------------------------------------------------------------

function fallbacksOf(el) {
  const raw = el.getAttribute("data-fallback-url") || "";
  return raw.split(/\s+/).filter(Boolean);
}

function tagIntegrity(el) {
  return el.getAttribute("data-auraseal-integrity") || el.getAttribute("integrity") || "";
}

function tagOptions(el) {
  return {
    target: el,
    crossOrigin: el.getAttribute("crossorigin") || "anonymous",
    type: el.localName === "script" && el.type === "module" ? "module" : "classic",
    nonce: el.nonce || undefined,
  };
}

/** A native (rewritten) tag failed: fetch its fallbacks through the loader. */
async function recoverNative(el) {
  if (el.dataset.aurasealState) return;
  const src = el.localName === "script" ? el.src : el.href;
  const fallbacks = fallbacksOf(el).map((u) => absolute(u, document.baseURI));
  const prior = [{ url: src, reason: "native-error", message: "the browser refused it (network error or integrity mismatch)" }];
  el.dataset.aurasealState = "fallback";
  const load = el.localName === "script" ? loadScript : loadStyle;
  if (fallbacks.length) {
    emit(el, "auraseal:fallback", {
      url: src,
      next: fallbacks[0],
      reason: "native-error",
      message: prior[0].message,
    });
  }
  try {
    await load(fallbacks[0] ?? src, tagIntegrity(el), {
      ...tagOptions(el),
      fallbackUrls: fallbacks.slice(1),
      priorAttempts: prior,
    });
    el.dataset.aurasealState = "verified";
  } catch {
    el.dataset.aurasealState = "blocked";
  }
}

function fetchedByBrowser(url) {
  return (
    typeof performance !== "undefined" &&
    performance.getEntriesByName(url).some((e) => e.initiatorType !== "fetch")
  );
}

/**
 * Verify-and-load one seed-style element (`<script src integrity="auraseal-…"
 * data-fallback-url="…">` or a `<link rel=stylesheet>`) that the browser has
 * not run: one created by script and not yet inserted, or inert markup.
 */
export async function upgradeElement(el) {
  const isScript = el.localName === "script";
  const src = isScript ? el.getAttribute("src") : el.getAttribute("href");
  if (!src) throw new ConfigError("element has no src/href to upgrade");
  el.dataset.aurasealState = "pending";
  const load = isScript ? loadScript : loadStyle;
  try {
    const res = await load(src, tagIntegrity(el), {
      ...tagOptions(el),
      target: el.isConnected ? el : document,
      fallbackUrls: fallbacksOf(el),
    });
    el.dataset.aurasealState = "verified";
    return res;
  } catch (err) {
    el.dataset.aurasealState = "blocked";
    throw err;
  }
}

/**
 * Give every AuraSeal tag under `root` the protection it asks for:
 * rewritten tags (native SRI + data-auraseal-integrity) whose native load
 * failed get their fallbacks loaded and verified; seed-style tags the
 * browser has not run are upgraded (verified, fallbacks, events); seed-style
 * tags the browser already ran unverified are reported with
 * `auraseal:unverified` (they cannot be taken back: run `auraseal html`).
 */
export function upgrade(root = document) {
  const jobs = [];
  const sel =
    'script[src][integrity^="auraseal-"], script[src][data-auraseal-integrity], ' +
    'link[href][integrity^="auraseal-"], link[href][data-auraseal-integrity]';
  for (const el of root.querySelectorAll(sel)) {
    if (el.dataset.aurasealState) continue;
    if (el.localName === "link" && !/\bstylesheet\b/i.test(el.rel)) continue;
    const native = !(el.getAttribute("integrity") || "").startsWith("auraseal-");
    if (native) {
      // The browser verifies natively; scripts report failures through the
      // capturing error listener, stylesheets are checked here.
      if (el.localName === "link" && !el.sheet && fallbacksOf(el).length) {
        jobs.push(recoverNative(el));
      }
      continue;
    }
    const abs = absolute(el.localName === "script" ? el.getAttribute("src") : el.getAttribute("href"));
    const ran = el.localName === "link" ? Boolean(el.sheet) || fetchedByBrowser(abs) : fetchedByBrowser(abs);
    if (el.isConnected && ran) {
      el.dataset.aurasealState = "unverified";
      emit(el, "auraseal:unverified", {
        url: abs,
        reason: "ran-before-loader",
        message:
          "a seed-style integrity=\"auraseal-…\" tag was loaded by the browser without verification; rewrite the page with `auraseal html`",
      });
      continue;
    }
    jobs.push(upgradeElement(el).catch(() => undefined));
  }
  const sigOnly = [...root.querySelectorAll('script[src][integrity*="ed25519-"]')].filter((el) => {
    if (el.dataset.aurasealState) return false;
    const sri = parseSRI(el.getAttribute("integrity") || "");
    return sri.keys.length > 0 && sri.tokens.length === 0;
  });
  if (sigOnly.length) jobs.push(reportUncheckedSignatureTags(sigOnly));
  return Promise.all(jobs);
}

/**
 * Signature-only tags (`integrity="ed25519-…"`, no hash) in a browser that
 * does not check signatures run unverified, and that cannot be taken back:
 * report them (`auraseal:unverified`, reason `no-native-signature-sri`).
 */
async function reportUncheckedSignatureTags(tags) {
  if (await detectNativeSignatureSRI(document)) return;
  for (const el of tags) {
    if (el.dataset.aurasealState) continue;
    el.dataset.aurasealState = "unverified";
    emit(el, "auraseal:unverified", {
      url: el.src,
      reason: "no-native-signature-sri",
      message:
        "this browser does not check integrity=\"ed25519-…\" signatures, so the script ran unverified; add a hash (`auraseal html --mode both`) or load it with loadScript()",
    });
  }
}

function onNativeError(ev) {
  const el = ev.target;
  if (!el || (el.localName !== "script" && el.localName !== "link")) return;
  if (!el.hasAttribute("data-auraseal-integrity")) return;
  if ((el.getAttribute("integrity") || "").startsWith("auraseal-")) return;
  if (!fallbacksOf(el).length) {
    if (!el.dataset.aurasealState) {
      el.dataset.aurasealState = "blocked";
      emit(el, "auraseal:blocked", {
        url: el.src || el.href,
        reason: "native-error",
        message: "the browser refused it (network error or integrity mismatch)",
        attempts: [{ url: el.src || el.href, reason: "native-error" }],
      });
    }
    return;
  }
  recoverNative(el);
}

/** Listen for native failures and upgrade the page's tags (done on import). */
export function install(doc = document) {
  if (doc[STATE]) return;
  doc[STATE] = true;
  doc.addEventListener("error", onNativeError, true);
  const run = () => upgrade(doc);
  if (doc.readyState === "loading") doc.addEventListener("DOMContentLoaded", run, { once: true });
  else queueMicrotask(run);
}

if (typeof document !== "undefined") install(document);
