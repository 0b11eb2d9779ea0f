package restore

import (
	"errors"
	"testing"

	"go.mongodb.org/mongo-driver/mongo"
)

func TestInsertsRaced(t *testing.T) {
	dup := func(i int) mongo.BulkWriteError {
		return mongo.BulkWriteError{WriteError: mongo.WriteError{Index: i, Code: 11000, Message: "E11000 duplicate key"}}
	}
	other := errors.New("connection reset")
	for _, tc := range []struct {
		name    string
		err     error
		n       int
		want    int
		wantErr bool
	}{
		{"no error", nil, 3, 0, false},
		{"not a bulk write error", other, 3, 0, true},
		{"two inserts raced", mongo.BulkWriteException{WriteErrors: []mongo.BulkWriteError{dup(0), dup(2)}}, 3, 2, false},
		{"the last insert raced after an earlier one", mongo.BulkWriteException{WriteErrors: []mongo.BulkWriteError{dup(1), dup(2)}}, 3, 2, false},
		{"a replace failed", mongo.BulkWriteException{WriteErrors: []mongo.BulkWriteError{dup(0), dup(3)}}, 3, 0, true},
		{"another write error", mongo.BulkWriteException{WriteErrors: []mongo.BulkWriteError{{WriteError: mongo.WriteError{Index: 0, Code: 10334}}}}, 3, 0, true},
		{"a write concern error", mongo.BulkWriteException{WriteConcernError: &mongo.WriteConcernError{Code: 64}, WriteErrors: []mongo.BulkWriteError{dup(0)}}, 3, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := insertsRaced(tc.err, tc.n)
			if got != tc.want || (err != nil) != tc.wantErr {
				t.Errorf("insertsRaced = %d, %v; want %d, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}
