// @ts-check
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

/**
 * Fair admission of queries to a shared set of slots, across identities (mirrors
 * protocol/_admission.py rule for rule; both run protocol/vectors/admission.json).
 *
 * 1. `offer(key, ticket, limit)`: an identity with `limit` queries admitted or waiting is refused at
 *    once ("identity"); a full wait room (`maxWaiting` in all) refuses at once ("tunnel");
 *    otherwise the ticket waits in its identity's queue (FIFO per identity). Returns null when queued.
 * 2. `grant(free)`: up to `free` waiting tickets, one at a time from the waiting identity with the
 *    FEWEST admitted queries; among equals the one granted least recently (round robin), then the
 *    one whose head ticket has waited longest.
 * 3. `withdraw(key, ticket)`: a waiter gave up; `release(key)`: an admitted query ended.
 */
export class FairAdmission {
  /** @param {{maxWaiting: number}} options */
  constructor({ maxWaiting }) {
    if (!(maxWaiting >= 0)) throw new RangeError("maxWaiting must be >= 0");
    this.maxWaiting = maxWaiting;
    /** @type {Map<string, number>} */
    this.admittedBy = new Map();
    /** @type {Map<string, Array<[number, any]>>} */
    this.queues = new Map();
    /** @type {Map<string, number>} grant sequence number of each identity's last grant */
    this.lastGrant = new Map();
    this.waitingCount = 0;
    this.seq = 0;
  }

  admitted(key) {
    return this.admittedBy.get(key) ?? 0;
  }

  /** Queries waiting (of `key`, or in all). */
  waiting(key) {
    if (key === undefined) return this.waitingCount;
    return this.queues.get(key)?.length ?? 0;
  }

  /** Counts only (no identities). */
  statistics() {
    let admitted = 0;
    for (const n of this.admittedBy.values()) admitted += n;
    return { admitted, waiting: this.waitingCount, waiting_identities: this.queues.size };
  }

  /** @returns {"identity" | "tunnel" | null} */
  offer(key, ticket, limit) {
    if (this.admitted(key) + this.waiting(key) >= limit) return "identity";
    if (this.waitingCount >= this.maxWaiting) return "tunnel";
    this.seq += 1;
    let queue = this.queues.get(key);
    if (queue === undefined) {
      queue = [];
      this.queues.set(key, queue);
    }
    queue.push([this.seq, ticket]);
    this.waitingCount += 1;
    return null;
  }

  /** @returns {Array<[string, any]>} (key, ticket) in the order admitted */
  grant(free) {
    /** @type {Array<[string, any]>} */
    const granted = [];
    while (granted.length < free && this.queues.size) {
      let best = "";
      /** @type {number[] | null} */
      let bestRank = null;
      for (const [key, waiting] of this.queues) {
        const rank = [this.admitted(key), this.lastGrant.get(key) ?? 0, waiting[0][0]];
        if (bestRank === null || rank[0] < bestRank[0] || (rank[0] === bestRank[0] && (rank[1] < bestRank[1] || (rank[1] === bestRank[1] && rank[2] < bestRank[2])))) {
          best = key;
          bestRank = rank;
        }
      }
      const queue = /** @type {Array<[number, any]>} */ (this.queues.get(best));
      const [, ticket] = /** @type {[number, any]} */ (queue.shift());
      if (!queue.length) this.queues.delete(best);
      this.waitingCount -= 1;
      this.admittedBy.set(best, this.admitted(best) + 1);
      this.seq += 1;
      this.lastGrant.set(best, this.seq);
      granted.push([best, ticket]);
    }
    return granted;
  }

  /** Take a waiting ticket out of its queue; false if it is not waiting (granted). */
  withdraw(key, ticket) {
    const queue = this.queues.get(key);
    const at = queue === undefined ? -1 : queue.findIndex(([, t]) => t === ticket);
    if (queue === undefined || at < 0) return false;
    queue.splice(at, 1);
    this.waitingCount -= 1;
    if (!queue.length) {
      this.queues.delete(key);
      this.forget(key);
    }
    return true;
  }

  /** An admitted query of `key` ended (its slot is free: grant again). */
  release(key) {
    const count = this.admitted(key);
    if (count <= 0) throw new RangeError("release() without an admitted query for this identity");
    if (count === 1) {
      this.admittedBy.delete(key);
      this.forget(key);
    } else {
      this.admittedBy.set(key, count - 1);
    }
  }

  forget(key) {
    // An identity with nothing admitted or waiting leaves no trace (bounded memory).
    if (!this.admittedBy.has(key) && !this.queues.has(key)) this.lastGrant.delete(key);
  }
}
