// Errors the server answers with a status: OpenAI's error body ({error: {message, type, code}}).
export class HttpError extends Error {
  constructor(readonly status: number, message: string, readonly type = 'invalid_request_error', readonly headers: Record<string, string> = {}) {
    super(message);
  }
}
