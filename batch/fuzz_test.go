package batch_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/exchangekit/exchange/batch"
)

// reencode decodes data into a fresh T; when that succeeds the value must
// encode, decode again, and encode to the same bytes: the JSON a snapshot or
// the REST API writes always reads back as what was written.
func reencode[T any](t *testing.T, data []byte) {
	t.Helper()
	var v T
	if json.Unmarshal(data, &v) != nil {
		return
	}
	first, err := json.Marshal(&v)
	if err != nil {
		t.Fatalf("Marshal(%T decoded from %q) = %v", v, data, err)
	}
	var again T
	if err := json.Unmarshal(first, &again); err != nil {
		t.Fatalf("Unmarshal(Marshal(%T)) = %v\n%s", v, err, first)
	}
	second, err := json.Marshal(&again)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, second) {
		t.Fatalf("%T changed in a round trip:\nfirst  %s\nsecond %s", v, first, second)
	}
}

// FuzzBatchJSON decodes arbitrary bytes as a batch, a batch command, a
// command result and a batch table (the forms batches take in snapshots, log
// entries and the API): decoding never panics, and whatever decodes
// round-trips (reencode). Payloads that are not JSON, or nested deeper than
// encoding/json writes back, must survive as base64.
func FuzzBatchJSON(f *testing.F) {
	for _, s := range []string{
		`{"id":"b1","targetId":"t","commands":[{"command":{"id":"c1","type":"A","payload":{"a":1}},"status":"SUCCEEDED","reply":{"status":"SUCCEEDED","payload":[1,2]}}],"status":"PENDING","maxRetry":3}`,
		`{"command":{"id":"c","type":"T","payloadBase64":"/wA="},"reply":{"payloadBase64":"!!"}}`,
		`{"command":{"id":"c","type":"T","payload":"x","payloadBase64":"eA=="}}`,
		`{"command":{"metadata":{"k":"\u0000"}},"status":"NOPE","reply":{"status":"STATUS_UNSPECIFIED","code":2147483648}}`,
		`{"seq":2,"batches":[{"seq":1,"batch":{"id":"b","targetId":"t","status":"PENDING"}},{"seq":2,"batch":{"id":"c","status":"SUCCEEDED"}}]}`,
		`{"seq":1,"batches":[{"seq":1,"batch":{"id":"b","status":"PENDING"}},{"seq":1,"batch":{"id":"b","status":"PENDING"}}]}`,
		`{"retry":1e400,"maxRetry":-1,"lastRetryAt":"9999-12-31T23:59:59Z"}`,
		"{\"id\":\"\xff\",\"commands\":[null]}",
		`null`, `{}`, `[]`,
	} {
		f.Add([]byte(s))
	}
	deep := strings.Repeat("[", 10000) + strings.Repeat("]", 10000)
	f.Add([]byte(`{"command":{"id":"c","type":"T","payload":` + deep + `}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		reencode[batch.Batch](t, data)
		reencode[batch.Command](t, data)
		reencode[batch.CommandResult](t, data)
		reencode[batch.Table](t, data)
	})
}
