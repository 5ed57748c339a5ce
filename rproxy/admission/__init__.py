"""Connection admission: which connections a listener takes, decided when
each arrives and before a byte of it is read.

  - L{networks}: allow and deny lists of networks (L{AddressList}) and the
    address a client is counted under (L{client_key});
  - L{rate}: the accept rate per address (L{AcceptRate}, GCRA over a
    bounded table);
  - L{gate}: a listener's rules together (L{Admission}) and the
    L{Refusal} they give;
  - L{accept}: the factory a listener's front is wrapped in to enforce them,
    and what a refused connection is sent.

Route-level lists are a filter, L{rproxy.http.filters.access}.
"""

from rproxy.admission.gate import REASONS, Admission, Refusal
from rproxy.admission.networks import AddressList, client_key
from rproxy.admission.rate import AcceptRate

__all__ = ["REASONS", "AcceptRate", "AddressList", "Admission", "Refusal", "client_key"]
