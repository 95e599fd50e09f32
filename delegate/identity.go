package delegate

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// Identity is who the delegate is to the manager: its id and its own token.
type Identity struct {
	ID    string `json:"id"`
	Token string `json:"token"`
}

// IdentityStore keeps the identity across restarts, so that a delegate
// that restarts resumes as itself and keeps its leases.
type IdentityStore interface {
	// Load returns the stored identity, or nil and no error when there is
	// none.
	Load() (*Identity, error)
	// Save stores the identity.
	Save(*Identity) error
	// Clear forgets the identity.
	Clear() error
}

// MemoryIdentity is an IdentityStore that forgets on exit.
type MemoryIdentity struct {
	mu sync.Mutex
	id *Identity
}

// Load returns the identity saved last.
func (m *MemoryIdentity) Load() (*Identity, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.id, nil
}

// Save keeps id.
func (m *MemoryIdentity) Save(id *Identity) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.id = id
	return nil
}

// Clear forgets the identity.
func (m *MemoryIdentity) Clear() error { return m.Save(nil) }

// identityPath is where a delegate keeps its identity: one file per name,
// so that sibling delegates on one host may share a state dir and its
// workspaces (and clean up after each other) while each stays itself.
func identityPath(stateDir, name string) string {
	safe := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '_'
	}, name)
	return filepath.Join(stateDir, "identity-"+strings.TrimLeft(safe, ".")+".json")
}

// identityFile keeps the delegate's identity in the state dir, mode 0600,
// with the manager it belongs to: an identity of another manager is not
// offered to this one.
type identityFile struct {
	path    string
	manager string
}

type storedIdentity struct {
	Manager string `json:"manager"`
	Identity
}

func (f *identityFile) Load() (*Identity, error) {
	b, err := os.ReadFile(f.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read identity: %w", err)
	}
	var s storedIdentity
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("read identity %s: %w", f.path, err)
	}
	if s.Manager != f.manager || s.ID == "" {
		return nil, nil
	}
	return &s.Identity, nil
}

func (f *identityFile) Save(id *Identity) error {
	if id == nil {
		return f.Clear()
	}
	if err := os.MkdirAll(filepath.Dir(f.path), 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	b, err := json.Marshal(storedIdentity{Manager: f.manager, Identity: *id})
	if err != nil {
		return fmt.Errorf("encode identity: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(f.path), ".identity-*")
	if err != nil {
		return fmt.Errorf("write identity: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write identity: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("write identity: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write identity: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write identity: %w", err)
	}
	if err := os.Rename(tmp.Name(), f.path); err != nil {
		return fmt.Errorf("write identity: %w", err)
	}
	return nil
}

func (f *identityFile) Clear() error {
	if err := os.Remove(f.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove identity: %w", err)
	}
	return nil
}
