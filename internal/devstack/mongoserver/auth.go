package mongoserver

import (
	"crypto/rand"
	"fmt"
	"sync"

	"github.com/xdg-go/scram"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
)

// SCRAM-SHA-256 authentication (saslStart / saslContinue) for the single
// user configured in Options. The stored credentials are derived once.

func init() {
	register(cmdSaslStart, true, "saslStart")
	register(cmdSaslContinue, true, "saslContinue")
	register(cmdLogout, true, "logout")
}

const scramIterations = 4096 // the minimum drivers accept for SCRAM-SHA-256

// scramServer lazily builds the xdg-go/scram server for the configured user.
type scramServer struct {
	once sync.Once
	srv  *scram.Server
	err  error
}

func (s *Server) scram() (*scram.Server, error) {
	s.scramSrv.once.Do(func() {
		salt := make([]byte, 16)
		_, _ = rand.Read(salt)
		client, err := scram.SHA256.NewClient(s.opts.Username, s.opts.Password, "")
		if err != nil {
			s.scramSrv.err = fmt.Errorf("prepare SCRAM credentials: %w", err)
			return
		}
		creds := client.GetStoredCredentials(scram.KeyFactors{Salt: string(salt), Iters: scramIterations})
		s.scramSrv.srv, s.scramSrv.err = scram.SHA256.NewServer(func(user string) (scram.StoredCredentials, error) {
			if user != s.opts.Username {
				return scram.StoredCredentials{}, fmt.Errorf("unknown user %q", user)
			}
			return creds, nil
		})
	})
	return s.scramSrv.srv, s.scramSrv.err
}

func cmdSaslStart(c *cmdCtx, dst []byte) ([]byte, error) {
	mech, err := c.str("mechanism")
	if err != nil {
		return nil, err
	}
	if c.s.opts.Username == "" {
		return nil, errf(codeAuthenticationFailed, "Authentication failed.")
	}
	if mech != "SCRAM-SHA-256" {
		return nil, errf(codeBadValue, "Unsupported mechanism %s; this server supports SCRAM-SHA-256", mech)
	}
	srv, err := c.s.scram()
	if err != nil {
		return nil, errf(codeInternalError, "%v", err)
	}
	c.conn.sasl = srv.NewConversation()
	c.conn.saslID++
	return saslStep(c, dst)
}

func cmdSaslContinue(c *cmdCtx, dst []byte) ([]byte, error) {
	if c.conn.sasl == nil {
		return nil, errf(codeAuthenticationFailed, "No SASL session state found")
	}
	return saslStep(c, dst)
}

// saslStep feeds the client's payload to the conversation and answers with
// the server's message. With skipEmptyExchange the final server message
// already reports done.
func saslStep(c *cmdCtx, dst []byte) ([]byte, error) {
	conv := c.conn.sasl
	var payload []byte
	if v := c.value("payload"); v.Type != 0 {
		if _, data, ok := v.BinaryOK(); ok {
			payload = data
		} else if s, ok := v.StringValueOK(); ok {
			payload = []byte(s)
		}
	}
	var reply string
	if !conv.Done() {
		var err error
		reply, err = conv.Step(string(payload))
		if err != nil {
			c.conn.sasl = nil
			c.s.log.Info("mongoserver authentication failed", "remote", c.conn.conn.RemoteAddr().String(), "err", err)
			return nil, errf(codeAuthenticationFailed, "Authentication failed.")
		}
	}
	done := conv.Done()
	if done {
		if !conv.Valid() {
			c.conn.sasl = nil
			return nil, errf(codeAuthenticationFailed, "Authentication failed.")
		}
		c.conn.authenticated = true
	}
	dst = bsoncore.AppendInt32Element(dst, "conversationId", c.conn.saslID)
	dst = bsoncore.AppendBooleanElement(dst, "done", done)
	dst = bsoncore.AppendBinaryElement(dst, "payload", 0, []byte(reply))
	return dst, nil
}

func cmdLogout(c *cmdCtx, dst []byte) ([]byte, error) {
	c.conn.authenticated = c.s.opts.Username == ""
	return dst, nil
}
