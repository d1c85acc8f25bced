package embedded

// WithInline is withInline, for the tests of the InlineReceiver fast path.
var WithInline = withInline
