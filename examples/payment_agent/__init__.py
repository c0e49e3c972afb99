"""The payment agent: an invoice paid only after its approver said yes, at a payment API that checks the grant."""
