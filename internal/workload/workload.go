// Package workload holds the document the measurements write: `docdbdr bench` and
// internal/localrun's footprint test use the same one, so their figures describe the same load.
package workload

import (
	"fmt"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
)

// Order is an order document of about 330 bytes (as BSON) with the usual types: an ObjectId _id,
// int64, strings, a double, a date, an array of sub-documents and a sub-document. seq varies the
// values; the _id is new on every call.
func Order(seq int) bson.D {
	return bson.D{
		{Key: "_id", Value: primitive.NewObjectID()},
		{Key: "seq", Value: int64(seq)},
		{Key: "customer", Value: fmt.Sprintf("customer-%06d", seq%5000)},
		{Key: "status", Value: "created"},
		{Key: "total", Value: float64(seq%1000) + 0.99},
		{Key: "at", Value: primitive.NewDateTimeFromTime(time.Now())},
		{Key: "items", Value: bson.A{
			bson.D{{Key: "sku", Value: "A-100"}, {Key: "qty", Value: int32(1 + seq%3)}},
			bson.D{{Key: "sku", Value: "B-200"}, {Key: "qty", Value: int32(2)}},
		}},
		{Key: "address", Value: bson.D{{Key: "city", Value: "Seattle"}, {Key: "zip", Value: "98101"}}},
		{Key: "note", Value: strings.Repeat("x", 80)},
	}
}
