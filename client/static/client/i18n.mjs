// English and Simplified Chinese, chosen by the browser's language list. The API's own error
// messages are shown as the API words them; these are the client's words.

const MESSAGES = {
  en: {
    app_name: "Red packets",
    sign_in: "Sign in", username: "Username", password: "Password", sign_out: "Sign out", signed_in_as: "Signed in as {user}",
    demo_logins: "Demo users (one tap)", demo_pin: "Payment PIN {pin}", signing_in: "Signing in…",
    chats: "Chats", no_groups: "You are not in any group yet.", members: "{n} members",
    back: "Back", wallet: "Wallet", balance: "Balance",
    send_packet: "Send a red packet", load_earlier: "Load earlier packets",
    no_packets: "No red packets here yet. Send the first one!",
    packet_from: "Red packet from {sender}", default_greeting: "Best wishes!",
    state_new: "Open it", state_opened: "Opened · you got {amount}", state_finished: "All claimed",
    state_expiring: "Expired · refund on its way", state_expired: "Expired", state_for: "For {user} only",
    state_mine: "Sent by you", has_passphrase: "Passphrase",
    kind: "Kind", kind_random: "Random amounts", kind_fixed: "Same amount each",
    amount_total: "Total (¥)", amount_each: "Each share (¥)", share_count: "Number of shares",
    greeting: "Greeting", greeting_placeholder: "Best wishes!",
    passphrase: "Passphrase (optional)", passphrase_help: "Members type it to open the packet.",
    hint: "Hint for the passphrase", hint_placeholder: "A question or a clue",
    recipient: "Only for", recipient_anyone: "Anyone in the group",
    total_preview: "Total {amount}", continue: "Continue", cancel: "Cancel", close: "Close",
    pin_title: "Enter your payment PIN", pin_label: "Payment PIN (6 digits)", pin_for: "{amount} to {group}",
    pin_digit: "Digit {d}", pin_delete: "Delete last digit", pin_progress: "{n} of 6 digits", sending: "Sending…",
    sent: "Red packet sent.", topup_button: "Top up {amount} (sandbox)", topped_up: "Added {amount}. Balance {balance}.",
    amount_empty: "Enter an amount.", amount_format: "Use digits and at most one decimal point, such as 8.88.",
    amount_precision: "At most {digits} decimal places.", amount_zero: "The amount must be more than 0.",
    amount_too_large: "That amount is too large.", count_invalid: "Enter a whole number of shares, 1 or more.",
    open: "Open", open_coin: "Open", open_yourself: "Open it yourself", opening: "Opening…", passphrase_prompt: "Passphrase", hint_is: "Hint: {hint}",
    you_got: "You got", saved_to_wallet: "Saved to your wallet", best_luck: "Best luck",
    claims_title: "Who opened it", no_claims: "Nobody has opened it yet.",
    summary_finished: "All {n} claimed in {duration}", summary_active: "{k} of {n} opened · {amount} left",
    summary_expired: "Expired · {k} of {n} opened · {amount} refunded to {sender}",
    summary_expiring: "Expired · {k} of {n} opened · {amount} on its way back to {sender}",
    only_for: "Only {user} can open this packet.", exclusive_for: "For {user}",
    verified: "Verified", verify_pending: "The split is proven once every share is claimed or it expires.",
    verify_failed: "Verification failed", verify_late: "First seen after the split was revealed",
    verify_details: "The shares were fixed before the first claim (rp-split-v1, checked in this browser).",
    verify_unavailable: "Cannot verify here: {reason}",
    problem_commitment_mismatch: "the proof does not match the packet's commitment",
    problem_commitment_changed: "the commitment differs from the one first seen",
    problem_shares_mismatch: "the shares do not recompute from the seed",
    problem_claim_amount: "{user}'s amount is not their share", problem_share_index: "{user}'s share number is wrong",
    problem_refund_amount: "the refund is not the unclaimed shares", problem_algorithm: "unknown algorithm {algorithm}",
    problem_seed: "the seed is malformed", problem_split_error: "{message}",
    history: "History", no_history: "No movements yet.", more: "Show more", sandbox_topup: "Top up {amount} (sandbox)",
    kind_topup: "Top-up", kind_packet_send: "Sent a red packet", kind_packet_claim: "Opened a red packet",
    kind_packet_refund: "Refund of a red packet", kind_adjustment: "Adjustment",
    live_offline: "Connection lost; retrying…", error_network: "The service cannot be reached. Try again.",
    seconds: "{n} s", minutes: "{m} min {s} s", hours: "{h} h {m} min",
    new_here: "New here?", create_account: "Create account", have_account: "Already have an account?",
    username_help: "Letters, digits and @ . + - _ (no spaces).",
    ask_to_be_added: "Ask a group's owner to add you: your username is {user}.",
    welcome: "Welcome, {user}", later: "Later",
    pin_setup_intro: "Choose a 6-digit payment PIN. You type it each time you send a red packet.",
    pin_setup_to_send: "You have no payment PIN yet. Choose 6 digits; the packet goes as soon as it is set.",
    pin_new_title: "Choose your payment PIN", pin_new_label: "New payment PIN (6 digits)",
    pin_confirm_title: "Type the PIN again", pin_confirm_text: "The same 6 digits, to be sure.",
    pin_mismatch: "The two PINs differ. Choose one again.", pin_saved: "Payment PIN set.",
  },
  zh: {
    app_name: "红包",
    sign_in: "登录", username: "用户名", password: "密码", sign_out: "退出登录", signed_in_as: "当前用户：{user}",
    demo_logins: "演示用户（一键登录）", demo_pin: "支付密码 {pin}", signing_in: "正在登录…",
    chats: "群聊", no_groups: "你还没有加入任何群。", members: "{n} 位成员",
    back: "返回", wallet: "钱包", balance: "余额",
    send_packet: "发红包", load_earlier: "加载更早的红包",
    no_packets: "这里还没有红包，来发第一个吧！",
    packet_from: "{sender} 的红包", default_greeting: "恭喜发财，大吉大利",
    state_new: "领取红包", state_opened: "已领取 · {amount}", state_finished: "已被领完",
    state_expiring: "已过期 · 正在退回", state_expired: "已过期", state_for: "{user} 的专属红包",
    state_mine: "你发的", has_passphrase: "口令红包",
    kind: "类型", kind_random: "拼手气红包", kind_fixed: "普通红包（每份相同）",
    amount_total: "总金额（元）", amount_each: "单个金额（元）", share_count: "红包个数",
    greeting: "祝福语", greeting_placeholder: "恭喜发财，大吉大利",
    passphrase: "口令（可选）", passphrase_help: "群成员输入口令才能领取。",
    hint: "口令提示", hint_placeholder: "一个问题或线索",
    recipient: "专属于", recipient_anyone: "群里所有人",
    total_preview: "合计 {amount}", continue: "继续", cancel: "取消", close: "关闭",
    pin_title: "请输入支付密码", pin_label: "支付密码（6 位数字）", pin_for: "{amount} 发给 {group}",
    pin_digit: "数字 {d}", pin_delete: "删除最后一位", pin_progress: "已输入 {n} 位，共 6 位", sending: "正在发送…",
    sent: "红包已发出。", topup_button: "充值 {amount}（沙盒）", topped_up: "已充值 {amount}，余额 {balance}。",
    amount_empty: "请输入金额。", amount_format: "请输入数字，最多一个小数点，例如 8.88。",
    amount_precision: "最多 {digits} 位小数。", amount_zero: "金额必须大于 0。",
    amount_too_large: "金额太大。", count_invalid: "请输入整数个数，至少 1 个。",
    open: "拆开", open_coin: "開", open_yourself: "自己也抢一个", opening: "正在拆开…", passphrase_prompt: "口令", hint_is: "提示：{hint}",
    you_got: "你领到了", saved_to_wallet: "已存入钱包", best_luck: "手气最佳",
    claims_title: "领取详情", no_claims: "还没有人领取。",
    summary_finished: "{n} 个红包，{duration}被抢光", summary_active: "已领取 {k}/{n} 个，剩余 {amount}",
    summary_expired: "已过期 · 已领取 {k}/{n} 个 · {amount} 已退回给 {sender}",
    summary_expiring: "已过期 · 已领取 {k}/{n} 个 · {amount} 正在退回给 {sender}",
    only_for: "只有 {user} 可以领取这个红包。", exclusive_for: "专属于 {user}",
    verified: "已验证", verify_pending: "红包领完或过期后即可验证金额分配。",
    verify_failed: "验证失败", verify_late: "首次看到时分配已公开",
    verify_details: "金额在第一次领取前已确定（rp-split-v1，在本浏览器中验证）。",
    verify_unavailable: "无法在此验证：{reason}",
    problem_commitment_mismatch: "证明与红包的承诺值不符",
    problem_commitment_changed: "承诺值与首次看到的不同",
    problem_shares_mismatch: "由种子无法算出相同的金额",
    problem_claim_amount: "{user} 的金额与其份额不符", problem_share_index: "{user} 的份额编号有误",
    problem_refund_amount: "退款金额不等于未领取的份额", problem_algorithm: "未知算法 {algorithm}",
    problem_seed: "种子格式错误", problem_split_error: "{message}",
    history: "账单", no_history: "暂无收支。", more: "显示更多", sandbox_topup: "充值 {amount}（沙盒）",
    kind_topup: "充值", kind_packet_send: "发出红包", kind_packet_claim: "领取红包",
    kind_packet_refund: "红包退款", kind_adjustment: "调整",
    live_offline: "连接中断，正在重试…", error_network: "无法连接服务，请重试。",
    seconds: "{n} 秒", minutes: "{m} 分 {s} 秒", hours: "{h} 小时 {m} 分",
    new_here: "第一次来？", create_account: "注册账号", have_account: "已有账号？",
    username_help: "字母、数字和 @ . + - _（不含空格）。",
    ask_to_be_added: "请群主把你加入群聊：你的用户名是 {user}。",
    welcome: "欢迎，{user}", later: "稍后",
    pin_setup_intro: "设置 6 位数字支付密码，每次发红包时都要输入。",
    pin_setup_to_send: "你还没有支付密码。请设置 6 位数字，设置好后红包立即发出。",
    pin_new_title: "设置支付密码", pin_new_label: "新支付密码（6 位数字）",
    pin_confirm_title: "请再次输入", pin_confirm_text: "再输入一次相同的 6 位数字。",
    pin_mismatch: "两次输入的密码不一致，请重新设置。", pin_saved: "支付密码已设置。",
  },
};

function pickLanguage(languages) {
  for (const tag of languages) {
    const lower = String(tag).toLowerCase();
    if (lower.startsWith("zh")) return "zh";
    if (lower.startsWith("en")) return "en";
  }
  return "en";
}

export const language = pickLanguage(globalThis.navigator?.languages ?? [globalThis.navigator?.language ?? "en"]);
export const htmlLang = language === "zh" ? "zh-Hans" : "en";

export function t(key, params = {}) {
  const text = MESSAGES[language][key] ?? MESSAGES.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in params ? String(params[name]) : `{${name}}`));
}

/** "12 s", "3 min 5 s", "2 h 5 min" for a duration in milliseconds. */
export function duration(ms) {
  const total = Math.max(0, Math.round(ms / 1000));
  if (total < 60) return t("seconds", { n: total });
  if (total < 3600) return t("minutes", { m: Math.floor(total / 60), s: total % 60 });
  return t("hours", { h: Math.floor(total / 3600), m: Math.floor((total % 3600) / 60) });
}

const timeFormat = new Intl.DateTimeFormat(htmlLang, { hour: "2-digit", minute: "2-digit" });
const dateTimeFormat = new Intl.DateTimeFormat(htmlLang, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });

/** A time as a chat shows it: the hour today, the date and hour before. */
export function when(iso) {
  const date = new Date(iso);
  const today = new Date().toDateString() === date.toDateString();
  return (today ? timeFormat : dateTimeFormat).format(date);
}
