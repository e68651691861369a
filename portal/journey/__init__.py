"""The end user's journey: a link opened, an attempt started, the callback, how it ends, a fresh link."""
