"""The error envelope of the OpenAI API.

Every non-2xx answer under /v1 is `{"error": {"message", "type", "param", "code"}}`.
The SDK maps the status to its exception class (400 BadRequestError, 401
AuthenticationError, 403 PermissionDeniedError, 404 NotFoundError, 405 ...).
Business conflicts are 400, never 409: the SDK retries 409s.
"""

from django.http import JsonResponse

TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "requests",
    500: "server_error",
    503: "server_error",
}


class ApiError(Exception):
    def __init__(self, message, *, status=400, param=None, code=None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.code = code

    def response(self):
        return error_response(self.message, status=self.status, param=self.param, code=self.code)


def error_response(message, *, status=400, param=None, code=None, headers=None):
    body = {"error": {"message": message, "type": TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code}}
    response = JsonResponse(body, status=status, headers=headers)
    return response


def not_found(what, object_id, param="id"):
    return ApiError(f"No such {what} object: {object_id}", status=404, param=param, code=None)
