"""@rawhttp entry script that answers with CORS headers (the seed document's example)."""

from azureml.contrib.services.aml_request import AMLRequest, rawhttp
from azureml.contrib.services.aml_response import AMLResponse


def init():
    """Nothing to load."""
    print("This is init()")


@rawhttp
def run(request: AMLRequest):
    """Echo a POST body back with an Access-Control-Allow-Origin header; GET returns the query path."""
    print("This is run()")
    print(f"Request: [{request}]")
    if request.method == "GET":
        resp_body = str.encode(request.full_path)
        return AMLResponse(resp_body, 200)
    elif request.method == "POST":
        req_body = request.get_data(False)
        resp = AMLResponse(req_body, 200)
        resp.headers["Access-Control-Allow-Origin"] = "http://www.example.com"
        return resp
    elif request.method == "OPTIONS":
        resp = AMLResponse("", 200)
        resp.headers["Allow"] = "OPTIONS, GET, POST"
        resp.headers["Access-Control-Allow-Methods"] = "OPTIONS, GET, POST"
        resp.headers["Access-Control-Allow-Origin"] = "http://www.example.com"
        resp.headers["Access-Control-Allow-Headers"] = "*"
        return resp
    else:
        return AMLResponse("bad request", 500)
