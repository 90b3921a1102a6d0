/**
 * Edge protections that cost almost nothing (mirrors relay/limits.py): token-bucket rate limiters
 * and refusal counters.
 *
 * Each isolate keeps its own buckets at module scope, so on Cloudflare (many isolates) the limits
 * are per isolate: they stop a scan or flood hitting one location cheaply, and are not a global
 * quota (put Cloudflare's WAF rate-limiting rules in front for that; see README).
 */

export class RateLimiter {
  /** @param {{rate: number, burst: number, maxKeys: number}} options rate per second; 0 disables */
  constructor({ rate, burst, maxKeys }) {
    this.rate = rate;
    this.burst = Math.max(1, burst);
    this.maxKeys = Math.max(1, maxKeys);
    this.buckets = new Map(); // insertion order = LRU order
  }

  get enabled() {
    return this.rate > 0;
  }

  bucket(key, now) {
    let bucket = this.buckets.get(key);
    if (bucket === undefined) {
      bucket = { tokens: this.burst, stamp: now };
      this.buckets.set(key, bucket);
      if (this.buckets.size > this.maxKeys) this.buckets.delete(this.buckets.keys().next().value);
    } else {
      this.buckets.delete(key);
      this.buckets.set(key, bucket);
      bucket.tokens = Math.min(this.burst, bucket.tokens + (now - bucket.stamp) * this.rate);
      bucket.stamp = now;
    }
    return bucket;
  }

  /** 0 if `key` may act now, else seconds until it may (spends nothing). */
  retryAfter(key, now) {
    if (!this.enabled || !this.buckets.has(key)) return 0;
    const bucket = this.bucket(key, now);
    return bucket.tokens >= 1 ? 0 : (1 - bucket.tokens) / this.rate;
  }

  /** Spend one token: 0 if allowed, else seconds to wait (nothing spent). */
  spend(key, now) {
    if (!this.enabled) return 0;
    const bucket = this.bucket(key, now);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return 0;
    }
    return (1 - bucket.tokens) / this.rate;
  }
}

/** Retry-After is whole seconds, at least 1. */
export function retryAfterHeader(seconds) {
  return String(Math.max(1, Math.ceil(seconds)));
}

/** How many requests were refused, by error code; plus a few totals. */
export class RefusalCounters {
  constructor() {
    this.refused = new Map();
    this.totals = new Map();
  }

  refuse(code) {
    this.refused.set(code, (this.refused.get(code) ?? 0) + 1);
  }

  count(name, n = 1) {
    this.totals.set(name, (this.totals.get(name) ?? 0) + n);
  }

  snapshot() {
    return {
      refused: Object.fromEntries([...this.refused].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))),
      totals: Object.fromEntries(this.totals),
    };
  }
}
