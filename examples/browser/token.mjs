// Mints a wshub connection token (HS256 JWT) on your backend: `npm install jsonwebtoken`,
// then `SECRET=... node token.mjs alice`. SECRET is client.token.hmac_secret_key.
import jwt from 'jsonwebtoken';

const user = process.argv[2] || 'alice';
const token = jwt.sign({ sub: user }, process.env.SECRET, { algorithm: 'HS256', expiresIn: '1h' });
console.log(token);
