// rp-split-v1, the published random split (docs/api.md, "Verifiable random split"), and the
// checks a member runs on a packet's proof. SHA-256 is WebCrypto's; u64 arithmetic is BigInt.

const TWO64 = 1n << 64n;
const encoder = new TextEncoder();

function subtle() {
  const crypto = globalThis.crypto;
  if (!crypto?.subtle) throw new Error("WebCrypto is unavailable (the page needs HTTPS or localhost).");
  return crypto.subtle;
}

async function sha256(bytes) {
  return new Uint8Array(await subtle().digest("SHA-256", bytes));
}

export function hexToBytes(hex) {
  if (!/^([0-9a-f]{2})*$/.test(hex)) throw new Error("not lowercase hex");
  return Uint8Array.from(hex.match(/../g) ?? [], (pair) => parseInt(pair, 16));
}

export function bytesToHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** SHA-256(seed || u64be(0)) || SHA-256(seed || u64be(1)) || ..., read 8 bytes at a time. */
class ByteStream {
  constructor(seed) {
    this.seed = seed;
    this.counter = 0n;
    this.block = new Uint8Array(0);
    this.offset = 0;
  }

  async u64() {
    if (this.offset === this.block.length) {
      // A block is 32 bytes, so an 8-byte read never straddles two blocks.
      const input = new Uint8Array(this.seed.length + 8);
      input.set(this.seed);
      new DataView(input.buffer).setBigUint64(this.seed.length, this.counter);
      this.counter += 1n;
      this.block = await sha256(input);
      this.offset = 0;
    }
    const value = new DataView(this.block.buffer, this.offset, 8).getBigUint64(0);
    this.offset += 8;
    return value;
  }

  /** Uniform on 0..k-1 by rejection: no modulo bias. */
  async below(k) {
    const big = BigInt(k);
    const r = TWO64 % big;
    for (;;) {
      const x = await this.u64();
      if (x < TWO64 - r) return Number(x % big);
    }
  }

  /** k non-negative integers summing to m, uniform over all such (Floyd's sample of bars). */
  async compose(m, k) {
    if (k < 1) throw new Error("compose needs k >= 1");
    if (k === 1) return [m];
    const bars = new Set();
    for (let j = m; j <= m + k - 2; j++) {
      const t = await this.below(j + 1);
      bars.add(bars.has(t) ? j : t);
    }
    const b = [...bars].sort((x, y) => x - y);
    const parts = [b[0]];
    for (let i = 1; i < k - 1; i++) parts.push(b[i] - b[i - 1] - 1);
    parts.push(m + k - 2 - b[k - 2]);
    return parts;
  }
}

/** The shares of rp-split-v1(total, count, cap, seed); seed is 32 bytes (or 64 hex). */
export async function splitShares(total, count, cap, seed) {
  const [T, n, C] = [Number(total), Number(count), Number(cap)];
  if (![T, n, C].every(Number.isSafeInteger) || !(n >= 1 && n <= T && T <= n * C)) {
    throw new Error(`rp-split-v1 needs 1 <= n <= T <= n*C (T=${total}, n=${count}, C=${cap})`);
  }
  const stream = new ByteStream(typeof seed === "string" ? hexToBytes(seed) : seed);
  const shares = (await stream.compose(T - n, n)).map((p) => 1 + p);
  while (shares.some((s) => s > C)) {
    let excess = 0;
    shares.forEach((s, i) => {
      if (s > C) {
        excess += s - C;
        shares[i] = C;
      }
    });
    const open = shares.flatMap((s, i) => (s < C ? [i] : []));
    const extra = await stream.compose(excess, open.length);
    open.forEach((index, i) => (shares[index] += extra[i]));
  }
  return shares;
}

/** "sha256:" + hex(SHA-256("rp-split-v1\n{id}\n{total}\n{count}\n{cap}\n{seed hex}")). */
export async function commitmentOf(packetId, total, count, cap, seedHex) {
  const text = `rp-split-v1\n${packetId}\n${total}\n${count}\n${cap}\n${seedHex}`;
  return "sha256:" + bytesToHex(await sha256(encoder.encode(text)));
}

/**
 * Checks a packet against its proof. `seenCommitment` is the commitment this client recorded
 * the first time it saw the packet. Returns {state, problems}: state "none" (no commitment: a
 * fixed packet or a v1 server), "pending" (no proof yet), "verified" or "failed"; problems are
 * {code, ...details} for the failed checks.
 */
export async function verifyPacket(packet, seenCommitment) {
  if (!packet.commitment) return { state: "none", problems: [] };
  const proof = packet.proof;
  if (!proof) return { state: "pending", problems: [] };
  const problems = [];
  if (proof.algorithm !== "rp-split-v1") return { state: "failed", problems: [{ code: "algorithm", algorithm: proof.algorithm }] };
  if (!/^[0-9a-f]{64}$/.test(proof.seed ?? "")) return { state: "failed", problems: [{ code: "seed" }] };

  const recomputed = await commitmentOf(packet.id, packet.total_amount, packet.share_count, proof.cap, proof.seed);
  if (recomputed !== packet.commitment) problems.push({ code: "commitment_mismatch" });
  if (seenCommitment && seenCommitment !== packet.commitment) problems.push({ code: "commitment_changed" });

  let shares;
  try {
    shares = await splitShares(packet.total_amount, packet.share_count, proof.cap, proof.seed);
  } catch (error) {
    return { state: "failed", problems: [...problems, { code: "split_error", message: error.message }] };
  }
  const published = proof.shares ?? [];
  if (shares.length !== published.length || shares.some((s, i) => s !== published[i])) {
    problems.push({ code: "shares_mismatch" });
  }

  const taken = new Set();
  for (const claim of packet.claims ?? []) {
    const index = claim.share_index;
    if (!Number.isInteger(index) || index < 0 || index >= shares.length || taken.has(index)) {
      problems.push({ code: "share_index", user: claim.user });
      continue;
    }
    taken.add(index);
    if (claim.amount !== shares[index]) problems.push({ code: "claim_amount", user: claim.user });
  }
  const unclaimed = shares.reduce((sum, s, i) => (taken.has(i) ? sum : sum + s), 0);
  if (packet.refunded_amount !== unclaimed) problems.push({ code: "refund_amount" });
  return { state: problems.length ? "failed" : "verified", problems };
}
