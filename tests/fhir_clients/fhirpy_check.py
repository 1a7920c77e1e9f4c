"""The same request through `fhirpy`: a client configured with the base URL and a Bearer
key submits a CoverageEligibilityRequest to `$submit` and reads the response; errors come
back as OperationOutcomes the client raises. Run by tests/it/fhir_clients.rs with BASE, KEY,
REQUEST and UNKNOWN (a national ID nobody holds). Prints what the client read, as JSON."""
import json
import os

from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome

base, key = os.environ["BASE"], os.environ["KEY"]
request = json.load(open(os.environ["REQUEST"]))
fhir = SyncFHIRClient(base, authorization=f"Bearer {key}")

answer = fhir.execute("CoverageEligibilityRequest/$submit", method="post", data=request)
insurance = (answer.get("insurance") or [{}])[0]

unknown = dict(request)
unknown["patient"] = {"identifier": {"system": "urn:eligd:national-id", "value": os.environ["UNKNOWN"]}}
not_found = fhir.execute("CoverageEligibilityRequest/$submit", method="post", data=unknown)

# A refusal: fhirpy raises the server's OperationOutcome.
bad = dict(request)
bad["servicedDate"] = "2026-02-30"
try:
    fhir.execute("CoverageEligibilityRequest/$submit", method="post", data=bad)
    refused = None
except OperationOutcome as e:
    refused = str(e)

print(json.dumps({
    "resourceType": answer["resourceType"],
    "outcome": answer["outcome"],
    "inforce": insurance.get("inforce"),
    "excluded": [item.get("excluded") for item in insurance.get("item", [])],
    "not_found_outcome": not_found["outcome"],
    "not_found_error": not_found["error"][0]["code"]["coding"][0]["code"],
    "refused": refused,
}))
