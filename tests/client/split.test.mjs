// rp-split-v1 against the contract's six test vectors, and the checks of a packet's proof.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";

import { commitmentOf, splitShares, verifyPacket } from "../../client/static/client/split.mjs";

const ID = "3f2a0c1e-8b7d-4e5f-9a6b-1c2d3e4f5a6b";
const seq = Array.from({ length: 32 }, (_, i) => i.toString(16).padStart(2, "0")).join("");
const VECTORS = [
  [1000, 5, 20000, "00".repeat(32), [126, 408, 225, 82, 159], "843c4750147132fed348924ac0ff6bcb1339678518a6d31d4f9dabed89d9a9ac"],
  [10, 10, 20000, "11".repeat(32), Array(10).fill(1), "eacee9d62c6e05c2ee7c489fc3a74a81dfcc8168c8e6d65a90e589c4439d6407"],
  [888, 7, 200, seq, [49, 200, 200, 200, 18, 144, 77], "e6efd5fa46b003985d1b0cdbc6ef0250c97f6640829d4e80f5a8d048c61b8306"],
  [
    190000, 10, 20000, "50f2284d699c07c9badf69dfc2d3713f9908ebedd113f660641a512a6e001157",
    [15599, 20000, 20000, 20000, 20000, 20000, 20000, 20000, 14401, 20000],
    "1e20c58eef2f96a3b8b26489e3e3c3dcb30dac59014c9524fc708efdc799f892",
  ],
  [6, 3, 2, "ff".repeat(32), [2, 2, 2], "f0ca62f9fd18524a96ebfc31863ff8a180f582972eee4f52202b7ef209217343"],
  [100, 1, 20000, "ab".repeat(32), [100], "08452aa8bec0e15b70ef011549858d02a0b5955451d99d8c4122df6552df0d67"],
];

test("row 4's seed is SHA-256 of 'red packet'", () => {
  assert.equal(createHash("sha256").update("red packet").digest("hex"), VECTORS[3][3]);
});

for (const [T, n, C, seed, shares, commitment] of VECTORS) {
  test(`rp-split-v1(${T}, ${n}, ${C}) matches the contract's vector`, async () => {
    assert.deepEqual(await splitShares(T, n, C, seed), shares);
    assert.equal(await commitmentOf(ID, T, n, C, seed), `sha256:${commitment}`);
  });
}

test("out-of-range terms are refused", async () => {
  await assert.rejects(splitShares(4, 5, 20000, "00".repeat(32)));
  await assert.rejects(splitShares(11, 5, 2, "00".repeat(32)));
  await assert.rejects(splitShares(10, 0, 20000, "00".repeat(32)));
});

// A finished packet of vector 1, as the API shows it once the proof is out.
async function finishedPacket() {
  const [T, n, C, seed, shares] = VECTORS[0];
  const claims = ["bob", "carol", "dave", "erin", "alice"].map((user, i) => ({ user, amount: shares[i], share_index: i }));
  return {
    id: ID, kind: "random", status: "finished", total_amount: T, share_count: n, refunded_amount: 0, claims,
    commitment: await commitmentOf(ID, T, n, C, seed),
    proof: { algorithm: "rp-split-v1", seed, cap: C, shares },
  };
}

test("an honest finished packet verifies", async () => {
  const packet = await finishedPacket();
  assert.deepEqual(await verifyPacket(packet, packet.commitment), { state: "verified", problems: [] });
});

test("an expired packet verifies when the refund is the unclaimed shares", async () => {
  const packet = await finishedPacket();
  packet.status = "expired";
  packet.claims = packet.claims.slice(0, 2);
  packet.refunded_amount = 225 + 82 + 159;
  assert.equal((await verifyPacket(packet, packet.commitment)).state, "verified");
  packet.refunded_amount -= 1;
  assert.deepEqual((await verifyPacket(packet, packet.commitment)).problems, [{ code: "refund_amount" }]);
});

test("no proof yet is pending; no commitment is nothing to verify", async () => {
  const packet = await finishedPacket();
  assert.equal((await verifyPacket({ ...packet, proof: null }, packet.commitment)).state, "pending");
  assert.equal((await verifyPacket({ ...packet, commitment: null, proof: null }, null)).state, "none");
});

test("each kind of tampering is named", async () => {
  const seen = (await finishedPacket()).commitment;
  const cases = [
    [(p) => (p.commitment = "sha256:" + "0".repeat(64)), ["commitment_mismatch", "commitment_changed"]],
    [(p) => (p.proof.seed = "01".repeat(32)), ["commitment_mismatch", "shares_mismatch", "claim_amount"]],
    [(p) => (p.proof.shares = [408, 126, 225, 82, 159]), ["shares_mismatch"]],
    [(p) => (p.claims[0].amount = 127), ["claim_amount"]],
    [(p) => (p.claims[1].share_index = 0), ["share_index", "refund_amount"]],
    [(p) => (p.refunded_amount = 5), ["refund_amount"]],
    [(p) => (p.proof.algorithm = "rp-split-v0"), ["algorithm"]],
    [(p) => (p.proof.seed = "zz"), ["seed"]],
  ];
  for (const [tamper, codes] of cases) {
    const packet = await finishedPacket();
    tamper(packet);
    const result = await verifyPacket(packet, seen);
    assert.equal(result.state, "failed", tamper.toString());
    const found = [...new Set(result.problems.map((problem) => problem.code))];
    assert.deepEqual(found, codes, tamper.toString());
  }
});

test("a commitment recomputed from the proof but unlike the one first seen fails", async () => {
  const packet = await finishedPacket();
  const result = await verifyPacket(packet, "sha256:" + "a".repeat(64));
  assert.deepEqual(result.problems, [{ code: "commitment_changed" }]);
});
