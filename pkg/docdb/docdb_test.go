package docdb

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestRedact(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"no credentials", "mongodb://localhost:27017/?tls=false", "mongodb://localhost:27017/?tls=false"},
		{"user and password", "mongodb://admin:s3cret@h1:27017,h2:27017/db?replicaSet=rs0", "mongodb://admin:xxxxx@h1:27017,h2:27017/db?replicaSet=rs0"},
		{"srv", "mongodb+srv://u:p%40ss@cluster.example.com/", "mongodb+srv://u:xxxxx@cluster.example.com/"},
		{"unescaped @ in password", "mongodb://u:pa@ss@host/", "mongodb://u:xxxxx@host/"},
		{"user only", "mongodb://u@host/", "mongodb://u@host/"},
		{"sensitive options", "mongodb://host/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:tok&tlsCertificateKeyFilePassword=pw&appName=x",
			"mongodb://host/?authMechanism=MONGODB-AWS&authMechanismProperties=xxxxx&tlsCertificateKeyFilePassword=xxxxx&appName=x"},
		{"not a URI", "u:pw@host", "xxxxx@host"},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Redact(tt.in); got != tt.want {
				t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// FuzzRedact checks that a password placed in any URI shape never survives redaction: the
// redacted form does not depend on the password at all. Comparing with the redaction of the same
// URI holding a neutral password, rather than searching the output for the password, keeps the
// check from misfiring when the password happens to equal text Redact rightly keeps (a password
// "@host" with the host "host" is found in "u:xxxxx@host" without leaking anything).
func FuzzRedact(f *testing.F) {
	f.Add("mongodb://", "user", "s3cretPW", "host:27017/?tls=true")
	f.Add("mongodb+srv://", "u", "p/a?s", "c.example.com")
	f.Add("mongodb://", "u", "@host0", "host0")             // password equal to "@"+host
	f.Add("mongodb://", "u", "pa@ss", "h/?x=@y")            // "@" in the tail as well
	f.Add("", "u", "//secret1", "h")                        // the password forms "://": not a URI with a password
	f.Add("mongodb://", "u", "a://b?c", "h/?password=pw&x") // "://" and "?" inside the password
	f.Fuzz(func(t *testing.T, prefix, user, password, tail string) {
		if strings.ContainsAny(user, ":@/?") {
			t.Skip() // the user name ends at the first ":"; ":@/?" would move where the password starts
		}
		uri := prefix + user + ":" + password + "@" + tail
		if i := strings.Index(uri, "://"); i >= 0 && i+3 > len(prefix) {
			// The scheme separator is formed by the user, the ":" or the password itself (prefix "u",
			// password "//pw" reads as "u://pw@host": a URI whose user is "pw" and that has no
			// password), so this is not the URI shape the property is about.
			t.Skip()
		}
		got := Redact(uri)
		neutral := Redact(prefix + user + ":" + "pw" + "@" + tail)
		if got != neutral {
			t.Fatalf("Redact(%q) = %q depends on the password: with the password \"pw\" it is %q", uri, got, neutral)
		}
	})
}

func TestClientOptionsErrorsNeverHoldPassword(t *testing.T) {
	const pw = "Sup3rS3cretPW"
	tests := []struct {
		name    string
		s       Settings
		secrets StaticSecrets
		wantErr string
	}{
		{"bad option value quoted by the driver", Settings{URI: "mongodb://u:" + pw + "@h/?tlsCertificateKeyFilePassword=" + pw + "&connect=" + pw}, nil, "parse URI"},
		{"bad secret JSON", Settings{SecretARN: "arn:s"}, StaticSecrets{"arn:s": `{"password":"` + pw + `",`}, "not DocumentDB's JSON form"},
		{"secret lacks host", Settings{SecretARN: "arn:s"}, StaticSecrets{"arn:s": `{"username":"u","password":"` + pw + `"}`}, "lacks host"},
		{"secret bad port", Settings{SecretARN: "arn:s"}, StaticSecrets{"arn:s": `{"username":"u","password":"` + pw + `","host":"h","port":"x"}`}, "not a TCP port"},
		{"both sources", Settings{URI: "mongodb://h", SecretARN: "arn:s"}, nil, "both a URI and a secret"},
		{"neither", Settings{}, nil, "neither"},
		{"bad TLS mode", Settings{URI: "mongodb://h", TLS: "maybe"}, nil, "TLS mode"},
		{"missing CA file", Settings{URI: "mongodb://h", TLSCAFile: "/nonexistent/ca.pem"}, nil, "CA bundle"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, _, err := clientOptions(context.Background(), tt.s, tt.secrets)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not say %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), pw) {
				t.Errorf("error leaks the password: %q", err)
			}
		})
	}
}

func TestSecretBuildsOptions(t *testing.T) {
	secrets := StaticSecrets{"arn:s": `{"username":"dr","password":"pw","host":"c.docdb.amazonaws.com","port":27017,"engine":"docdb"}`}
	opts, hosts, hide, err := clientOptions(context.Background(), Settings{SecretARN: "arn:s", TLS: TLSDisabled}, secrets)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(hosts, ","); got != "c.docdb.amazonaws.com:27017" {
		t.Errorf("hosts = %s", got)
	}
	if opts.Auth == nil || opts.Auth.Username != "dr" || opts.Auth.Password != "pw" {
		t.Errorf("credential not set from the secret: %+v", opts.Auth)
	}
	if opts.RetryWrites == nil || *opts.RetryWrites {
		t.Error("retryable writes must be off for DocumentDB")
	}
	if opts.ReplicaSet == nil || *opts.ReplicaSet != "rs0" {
		t.Error("replica set rs0 not set")
	}
	if len(hide) != 1 || hide[0] != "pw" {
		t.Errorf("password not scheduled for scrubbing: %v", hide)
	}
}

func TestTLSPolicy(t *testing.T) {
	tests := []struct {
		name    string
		s       Settings
		hosts   []string
		wantErr bool
	}{
		{"tls required anywhere", Settings{TLS: TLSRequired}, []string{"db.example.com:27017"}, false},
		{"disabled to loopback ip", Settings{TLS: TLSDisabled}, []string{"127.0.0.1:27017", "[::1]:27017"}, false},
		{"disabled to localhost", Settings{TLS: TLSDisabled}, []string{"localhost:1"}, false},
		{"disabled to remote", Settings{TLS: TLSDisabled}, []string{"127.0.0.1:1", "db.example.com:27017"}, true},
		{"disabled to srv", Settings{TLS: TLSDisabled}, []string{"srv:localhost"}, true},
		{"disabled to remote, allowed", Settings{TLS: TLSDisabled, AllowInsecure: true}, []string{"10.0.0.1:27017"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkTLSPolicy(tt.s, tt.hosts)
			if (err != nil) != tt.wantErr {
				t.Errorf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "ALLOW_INSECURE") {
				t.Errorf("error does not say how to override: %v", err)
			}
		})
	}
}

func TestConnectUnreachableFailsFastWithoutPassword(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	// Port 1 on loopback: nothing listens.
	_, err := Connect(ctx, Settings{URI: "mongodb://u:Hunter2Hunter2@127.0.0.1:1/?directConnection=true", TLS: TLSDisabled}, nil)
	if err == nil {
		t.Fatal("connected to nothing")
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("took %v", time.Since(start))
	}
	if strings.Contains(err.Error(), "Hunter2") {
		t.Errorf("error leaks the password: %v", err)
	}
	if !strings.Contains(err.Error(), "mongodb://u:xxxxx@127.0.0.1:1") {
		t.Errorf("error does not name the redacted URI: %v", err)
	}
}
