"""A hospital system's first steps with the SMART on FHIR Python client (`fhirclient`):
prepare the server from its CapabilityStatement, then submit a CoverageEligibilityRequest
(IHE FAIS ITI-124, `$submit`) and read the decision with the client's own R4 models.
Run by tests/it/fhir_clients.rs with BASE (the FHIR base URL), KEY and REQUEST (a JSON file).
Prints what the client read, as JSON."""
import json
import os

from fhirclient import client
from fhirclient.models.coverageeligibilityresponse import CoverageEligibilityResponse

base, key = os.environ["BASE"], os.environ["KEY"]
request = json.load(open(os.environ["REQUEST"]))

smart = client.FHIRClient(settings={"app_id": "eligd-test", "api_base": base})
smart.prepare()  # GET [base]/metadata, parsed with the client's R4 CapabilityStatement model
assert smart.ready, "the client did not prepare the server"
statement = smart.server.capabilityStatement
operations = [
    op.definition
    for rest in statement.rest
    for resource in rest.resource
    for op in (resource.operation or [])
]

smart.server.session.headers["Authorization"] = f"Bearer {key}"
response = smart.server.post_json("CoverageEligibilityRequest/$submit", request)
answer = CoverageEligibilityResponse(response.json())  # strict: raises on anything not R4
insurance = answer.insurance[0] if answer.insurance else None
print(json.dumps({
    "fhirVersion": statement.fhirVersion,
    "formats": statement.format,
    "operations": operations,
    "outcome": answer.outcome,
    "inforce": insurance.inforce if insurance else None,
    "excluded": [item.excluded for item in (insurance.item or [])] if insurance else [],
    "disposition": answer.disposition,
    "tracking_code": answer.identifier[0].value,
}))
