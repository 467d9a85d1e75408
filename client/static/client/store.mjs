// What the client holds in memory, and the commitments it has seen (localStorage, so they
// outlive the tab: a packet's commitment is kept from the first time this browser saw it).

export const state = {
  config: null,
  me: null, // username
  view: null, // "login" | "register" | "pin" | "groups" | "group" | "wallet"
  group: null, // the open group: {id, name, owner, members}
  packets: new Map(), // the open group's packets by id
  earlier: null, // the `next` of the group's packet list
  openPacket: null, // the packet sheet's packet id
  wallet: null,
  pinSet: null, // whether the wallet has a payment PIN: false right after registration, null when not known
};

const commitmentKey = (id) => `rp.commitment.${id}`;

/** Records a packet's commitment the first time it is seen. */
export function rememberCommitment(packet) {
  if (!packet?.commitment || localStorage.getItem(commitmentKey(packet.id))) return;
  const record = { commitment: packet.commitment, seen_at: new Date().toISOString(), proof_out: Boolean(packet.proof) };
  localStorage.setItem(commitmentKey(packet.id), JSON.stringify(record));
}

export function seenCommitment(id) {
  try {
    return JSON.parse(localStorage.getItem(commitmentKey(id)));
  } catch {
    return null;
  }
}

/** The status to show: v1.1's `expiring` as soon as expires_at has passed, before the next fetch says so. */
export function statusOf(packet) {
  if (packet.status === "active" && Date.now() >= Date.parse(packet.expires_at)) return "expiring";
  return packet.status;
}
