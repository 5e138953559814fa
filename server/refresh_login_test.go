package server

import (
	"context"
	"testing"
	"time"
)

// A login's family that outgrows its 1,024 tokens (many sessions minted,
// none refreshed) forgets its oldest used token first, then its oldest
// unused one, and never the login's own record: the login keeps minting.
// The memory and Redis stores agree.
func TestRefreshFamilyCapKeepsTheLogin(t *testing.T) {
	t.Run("memory", func(t *testing.T) { testFamilyCapKeepsTheLogin(t, NewMemoryRefreshStore(nil)) })
	t.Run("redis", func(t *testing.T) { testFamilyCapKeepsTheLogin(t, NewRedisRefreshStore(standalone(t).node(t), 0)) })
}

func testFamilyCapKeepsTheLogin(t *testing.T, s RefreshStore) {
	ctx := context.Background()
	exp := time.Now().Add(time.Hour)
	_, login := newRefresh(t, "erin", "", exp)
	login.Login, login.TokenID = true, ""
	noErr(t, s.Create(ctx, login))
	var hashes []string
	add := func() {
		_, rec := newRefresh(t, "erin", login.Family, exp)
		noErr(t, s.Create(ctx, rec))
		hashes = append(hashes, rec.Hash)
	}
	for range maxFamilyTokens - 1 { // the family is full: the login and 1,023 sessions
		add()
	}
	if _, err := s.Use(ctx, hashes[5]); err != nil {
		t.Fatal(err)
	}
	add() // one over: the used token goes, not the older unused ones
	if _, err := s.Get(ctx, hashes[5]); err != ErrRefreshInvalid {
		t.Fatalf("the used token: %v, want forgotten (ErrRefreshInvalid)", err)
	}
	if _, err := s.Get(ctx, hashes[0]); err != nil {
		t.Fatalf("the oldest unused token: %v", err)
	}
	add() // none used: the oldest unused one goes, not the login
	if _, err := s.Get(ctx, hashes[0]); err != ErrRefreshInvalid {
		t.Fatalf("the oldest unused token: %v, want forgotten", err)
	}
	for range 5 {
		add()
	}
	rec, err := s.Get(ctx, login.Hash)
	if err != nil || !rec.Login {
		t.Fatalf("the login: %+v %v", rec, err)
	}
	if _, err := s.Get(ctx, hashes[len(hashes)-1]); err != nil {
		t.Fatalf("the newest token: %v", err)
	}
}
