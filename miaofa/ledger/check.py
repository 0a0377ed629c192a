"""Proof that the ledger adds up: every invariant as one query, each violation in words.

Run by `miaofa ledger check`, `GET /admin/ledger/check` and the scheduled check (a metric and an
alert on any violation). Each query is a set-based scan, so the check grows with the entries, not
with round trips."""

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

CHECKS: tuple[tuple[str, str, str], ...] = (
    (
        "unbalanced_transaction",
        """SELECT transaction_id::text, currency, sum(amount) FROM ledger_entries
           GROUP BY transaction_id, currency HAVING sum(amount) <> 0 LIMIT 50""",
        "transaction {0} sums to {2} {1}",
    ),
    (
        "balance_differs_from_entries",
        """SELECT a.id::text, a.balance, coalesce(sum(CASE WHEN a.normal = 'debit' THEN e.amount ELSE -e.amount END), 0)
           FROM ledger_accounts a LEFT JOIN ledger_entries e ON e.account_id = a.id
           GROUP BY a.id HAVING a.balance <> coalesce(sum(CASE WHEN a.normal = 'debit' THEN e.amount
                                                               ELSE -e.amount END), 0) LIMIT 50""",
        "account {0} says {1}, its entries sum to {2}",
    ),
    (
        "last_entry_disagrees",
        """SELECT a.id::text, a.balance, e.balance_after FROM ledger_accounts a
           JOIN LATERAL (SELECT balance_after, account_version FROM ledger_entries
                         WHERE account_id = a.id ORDER BY id DESC LIMIT 1) e ON true
           WHERE e.balance_after <> a.balance OR e.account_version <> a.version LIMIT 50""",
        "account {0} says {1}, its last entry {2}",
    ),
    (
        "negative_balance",
        """SELECT owner, kind, balance FROM ledger_accounts
           WHERE kind IN ('pending', 'available', 'reserved') AND balance < 0 LIMIT 50""",
        "{0} {1} is {2}",
    ),
    (
        "pending_not_held",
        """SELECT a.owner, a.currency, a.balance - coalesce(h.held, 0) FROM ledger_accounts a
           LEFT JOIN (SELECT merchant_id, currency, sum(remaining) AS held FROM ledger_holds
                      WHERE released_at IS NULL GROUP BY merchant_id, currency) h
             ON h.merchant_id = a.owner AND h.currency = a.currency
           WHERE a.kind = 'pending' AND a.balance <> coalesce(h.held, 0) LIMIT 50""",
        "{0}'s pending {1} differs from its open holds by {2}",
    ),
    (
        "delivered_without_sale",
        """SELECT o.id, o.merchant_id, o.amount_cents FROM orders o
           JOIN merchants m ON m.id = o.merchant_id AND m.settlement = 'platform'
           WHERE o.status = 'delivered' AND o.amount_cents > 0 AND o.list_cents IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM ledger_transactions t WHERE t.idem_key = 'sale:' || o.id) LIMIT 50""",
        "order {0} of {1} (a platform shop) was delivered ({2}) with no sale posted",
    ),
    (
        "refund_without_clawback",
        """SELECT o.id, o.merchant_id, '' FROM orders o
           WHERE o.status = 'refunded'
             AND EXISTS (SELECT 1 FROM ledger_transactions t WHERE t.idem_key = 'sale:' || o.id)
             AND NOT EXISTS (SELECT 1 FROM ledger_transactions t WHERE t.idem_key = 'refund:' || o.id) LIMIT 50""",
        "order {0} of {1} was refunded and its sale was not clawed back",
    ),
    # A stored statement never changes, so nothing may be booked into its day afterwards: each
    # merchant's last stored closing is what its entries booked by the end of that day sum to.
    (
        "statement_differs_from_entries",
        """WITH last AS (SELECT DISTINCT ON (merchant_id) merchant_id, day, body FROM ledger_statements
                         ORDER BY merchant_id, day DESC),
           stated AS (SELECT l.merchant_id, c.key AS currency, k.key AS kind, k.value::bigint AS cents
                      FROM last l, jsonb_each(l.body -> 'currencies') c, jsonb_each_text(c.value -> 'closing') k),
           summed AS (SELECT l.merchant_id, a.currency, a.kind,
                             sum(CASE WHEN a.normal = 'debit' THEN e.amount ELSE -e.amount END) AS cents
                      FROM last l JOIN ledger_accounts a ON a.owner = l.merchant_id
                      JOIN ledger_entries e ON e.account_id = a.id
                      JOIN ledger_transactions t ON t.id = e.transaction_id
                      WHERE t.created_at < (l.day + 1)::timestamp AT TIME ZONE 'UTC'
                      GROUP BY l.merchant_id, a.currency, a.kind)
           SELECT m.merchant_id, l.day::text, m.currency, m.kind, m.stated, m.summed FROM (
             SELECT coalesce(s.merchant_id, x.merchant_id) AS merchant_id, coalesce(s.currency, x.currency) AS currency,
                    coalesce(s.kind, x.kind) AS kind, coalesce(s.cents, 0) AS stated, coalesce(x.cents, 0) AS summed
             FROM stated s FULL JOIN summed x
               ON x.merchant_id = s.merchant_id AND x.currency = s.currency AND x.kind = s.kind) m
           JOIN last l ON l.merchant_id = m.merchant_id
           WHERE m.stated <> m.summed LIMIT 50""",
        "{0}'s statement of {1} closes {3} in {2} at {4}; its entries booked by then sum to {5}",
    ),
    # Payouts: each withdrawal's money moved exactly as its status says, and what left through a
    # rail is what the paid withdrawals sent (payout_clearing:<rail> is debit-normal: minus that).
    (
        "withdrawal_money_disagrees",
        """SELECT w.id, w.status, concat_ws(',', r.k, p.k, x.k, b.k) FROM withdrawals w
           LEFT JOIN LATERAL (SELECT 'reserved' AS k FROM ledger_transactions
                              WHERE idem_key = 'payout_reserve:' || w.id) r ON true
           LEFT JOIN LATERAL (SELECT 'paid' AS k FROM ledger_transactions
                              WHERE idem_key = 'payout_paid:' || w.id) p ON true
           LEFT JOIN LATERAL (SELECT 'released' AS k FROM ledger_transactions
                              WHERE idem_key = 'payout_return:' || w.id) x ON true
           LEFT JOIN LATERAL (SELECT 'bounced' AS k FROM ledger_transactions
                              WHERE idem_key = 'payout_bounce:' || w.id) b ON true
           WHERE r.k IS NULL
              OR (p.k IS NOT NULL) <> (w.status IN ('paid', 'returned'))
              OR (x.k IS NOT NULL) <> (w.status IN ('failed', 'rejected'))
              OR (b.k IS NOT NULL) <> (w.status = 'returned') LIMIT 50""",
        "withdrawal {0} is {1} but its ledger shows [{2}]",
    ),
    (
        # Both ways: money reserved for no open withdrawal is withheld from the merchant just the same.
        "reserved_differs_from_withdrawals",
        """SELECT coalesce(a.owner, w.merchant_id), coalesce(a.currency, w.currency),
                  coalesce(a.balance, 0), coalesce(w.open, 0)
           FROM (SELECT owner, currency, balance FROM ledger_accounts WHERE kind = 'reserved') a
           FULL JOIN (SELECT merchant_id, currency, sum(amount_cents) AS open FROM withdrawals
                      WHERE status IN ('requested', 'in_review', 'approved', 'submitted')
                      GROUP BY merchant_id, currency) w
             ON w.merchant_id = a.owner AND w.currency = a.currency
           WHERE coalesce(a.balance, 0) <> coalesce(w.open, 0) LIMIT 50""",
        "{0} has {2} reserved in {1}, its open withdrawals {3}",
    ),
    (
        "payout_clearing_differs",
        """SELECT coalesce(a.rail, w.rail), coalesce(a.currency, w.currency), coalesce(a.sent, 0), coalesce(w.sent, 0)
           FROM (SELECT substr(kind, 17) AS rail, currency, -balance AS sent FROM ledger_accounts
                 WHERE owner = 'platform' AND kind LIKE 'payout\\_clearing:%') a
           FULL JOIN (SELECT rail, currency, sum(amount_cents - fee_cents) AS sent FROM withdrawals
                      WHERE status = 'paid' GROUP BY rail, currency) w ON w.rail = a.rail AND w.currency = a.currency
           WHERE coalesce(a.sent, 0) <> coalesce(w.sent, 0) LIMIT 50""",
        "payout rail {0} in {1}: the ledger shows {2} sent out, the paid withdrawals {3}",
    ),
)


@dataclass(frozen=True)
class Violation:
    check: str
    detail: str


async def run(session: AsyncSession) -> list[Violation]:
    found = []
    for name, query, words in CHECKS:
        for row in (await session.execute(text(query))).all():
            found.append(Violation(name, words.format(*row)))
    return found
