"""The approval activities, one job per module; this one only re-exports.

activities.py   CibaActivities: the activity names Temporal sees, each handing on its work
send.py         the backchannel request (CIBA §7.1)
subjects.py     who may approve: the sources that name the approver must agree
redeem.py       the token request and the validation of its tokens (CIBA §10.1, §10.3.1)
revocation.py   tokens nobody will use (RFC 7009)
sealing.py      how tokens leave an activity: sealed; the approval's DPoP key
"""

from temporal_ciba._activities.activities import CibaActivities
from temporal_ciba._activities.redeem import GRANT_LOST, Redemptions
from temporal_ciba._activities.send import ID_TOKEN_HINT_INVALID, REQUEST_OUTCOME_UNKNOWN
from temporal_ciba._activities.subjects import SUBJECT_CONFLICT

__all__ = [
    "GRANT_LOST",
    "ID_TOKEN_HINT_INVALID",
    "REQUEST_OUTCOME_UNKNOWN",
    "SUBJECT_CONFLICT",
    "CibaActivities",
    "Redemptions",
]
