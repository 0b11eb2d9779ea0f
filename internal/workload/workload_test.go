package workload

import (
	"testing"

	"go.mongodb.org/mongo-driver/bson"
)

func TestOrder(t *testing.T) {
	a, b := Order(7), Order(7)
	ra, err := bson.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	// The benchmarks' figures are quoted per ~330-byte document.
	if n := len(ra); n < 300 || n > 360 {
		t.Errorf("Order marshals to %d bytes; want about 330", n)
	}
	if a[0].Key != "_id" || a[0].Value == b[0].Value {
		t.Errorf("_id %v then %v: want a fresh _id first on every call", a[0].Value, b[0].Value)
	}
	if got := bson.Raw(ra).Lookup("customer").StringValue(); got != "customer-000007" {
		t.Errorf("customer %q; want customer-000007", got)
	}
}
