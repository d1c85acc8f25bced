package embedded

// WithoutInline is withoutInline, for the tests of the reader's path.
var WithoutInline = withoutInline
