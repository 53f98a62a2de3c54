"""Release: the sign-off policy, its verdict, the signed release bundle and its verification.

What leaves the network is decided here: a board's policy is tested against a run's budget,
audits and utility evaluation; a passing run becomes a bundle whose manifest is signed
(Ed25519) by the board and, if the policy asks, approved by every site's own key.
"""
